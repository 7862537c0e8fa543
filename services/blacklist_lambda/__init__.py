"""blacklist_lambda: the Lambda that turns SES bounces and complaints into blacklist entries."""
