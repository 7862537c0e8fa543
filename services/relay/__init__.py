"""The ses-relay SMTP relay: an aiosmtpd front door for Amazon SES (see handler.py, server.py)."""
