"""The send-rate charging rule, published for the other senders of `ses_core` (the SES API one).

One rule for every way out: each attempt pays one token per recipient before SES counts it, and a
limiter that refuses defers the recipients with the same reply classes whichever sender asked.
The rule itself lives in `_charge`, next to the SMTP transaction that pays late; this module is
the deliberate public seam, so other subpackages need not import a private module.
"""

from ses_core.smtp._charge import SendRateCharger

__all__ = ["SendRateCharger"]
