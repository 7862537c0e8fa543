"""Cut off sessions that send junk commands instead of mail: slow-loris and chatty clients.

aiosmtpd restarts its idle timer on every recognised command, so the idle timeout alone never
ends a session whose client sends a valid `NOOP` one byte per second: it holds its connection
(and a slot of the process's file descriptors) forever. Postfix answers this with
`smtpd_junk_command_limit` and `smtpd_hard_error_limit`; the relay does the same with one budget
(`RELAY_JUNK_COMMAND_LIMIT`, whose default is Postfix's):

- every command that carries no mail (NOOP, RSET, VRFY, EXPN, HELP, HELO, EHLO) costs one unit;
- so does every command the relay answers with a protocol error (500-504), or with 452 (too many
  recipients): those are how a client would otherwise stall inside a transaction;
- a message that reaches the end of DATA, whatever the outcome, refills the budget.

So a session that delivers nothing ends after at most `limit` such commands plus
`RELAY_MAX_RECIPIENTS` accepted RCPTs, while an application that keeps one connection open for
days and sends a NOOP before each message never comes near it. A client whose messages are all
refused at RCPT (and which RSETs after each) is asked to reconnect after `limit` of them: a 421,
which it retries, as Postfix does.
"""

from __future__ import annotations

#: Commands that move no mail. A normal session sends one or two (EHLO before and after
#: STARTTLS), plus perhaps a NOOP or RSET per message.
JUNK_COMMANDS = frozenset({"NOOP", "RSET", "VRFY", "EXPN", "HELP", "HELO", "EHLO"})
#: Replies that mean the client got the protocol wrong (or asked for more recipients than
#: allowed), as opposed to policy answers such as a refused recipient, which are not its fault.
_JUNK_REPLY_CODES = frozenset({"452", "500", "501", "502", "503", "504"})

JUNK_REPLY = "421 4.7.0 Too many commands without a message, closing connection"


def is_junk_reply(status: str) -> bool:
    """Whether a reply line (`"503 5.5.1 Error: nested MAIL command"`) spends the budget."""
    return status[:3] in _JUNK_REPLY_CODES and status[3:4] in (" ", "")


class JunkBudget:
    """How many more junk commands one session may send before it is cut off."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the junk command limit must be at least 1")
        self._limit = limit
        self._left = limit

    @property
    def left(self) -> int:
        """Units left before the session is cut off."""
        return self._left

    def spend(self) -> bool:
        """Take one unit; False once the budget was already empty (the session must end)."""
        if self._left <= 0:
            return False
        self._left -= 1
        return True

    def refill(self) -> None:
        """A message reached the end of DATA: the client is doing real work."""
        self._left = self._limit
