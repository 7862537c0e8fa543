"""The SES v2 API upstream: the same `MessageSender` port as the SMTP client, over HTTPS.

Teams whose relay runs under an IAM role (ECS, EKS, EC2, Lambda) send with `SendEmail` and the
role's credentials instead of SMTP keys, and attach configuration sets and message tags. Outcomes
are the SMTP client's `SendResult`/`ReplyClass` values, so the relay's replies, retries and quota
handling are the same whichever way the mail goes out.

This front door holds the light names only: the settings, and the `X-SES-*` header check
(`consume_ses_headers`), which a queue can run before it answers 250. The sender needs boto3 and
is imported from its module: `from ses_core.sesapi.client import SesApiSender`.
"""

from ses_core.sesapi._headers import HeaderError, SesHeaders, consume_ses_headers
from ses_core.sesapi.settings import SesApiSettings

__all__ = ["HeaderError", "SesApiSettings", "SesHeaders", "consume_ses_headers"]
