"""The ses-relay SMTP relay: an aiosmtpd front door for Amazon SES.

`main` starts it; `wiring` turns the `config` into objects; `server` listens and shuts down;
each connection is a `session` (AUTH in `session_auth`), whose mail `handler` relays.
"""
