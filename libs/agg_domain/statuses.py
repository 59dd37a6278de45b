"""Business outcomes as values: closed enums, in precedence order, with ``is_transient``.

A transient status is one where a retry of the same request can change the answer."""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    AUTHENTICATE = "AUTHENTICATE"
    BALANCE = "BALANCE"
    BET = "BET"
    WIN = "WIN"
    ROLLBACK = "ROLLBACK"
    DEPOSIT = "DEPOSIT"
    """The operator moves funds into a transfer-wallet balance (operator API)."""
    WITHDRAW = "WITHDRAW"
    """The operator moves funds out of a transfer-wallet balance (operator API)."""
    PLAYER_CONTROLS = "PLAYER_CONTROLS"
    """The operator states a player's responsible-gaming controls (operator API)."""
    CAMPAIGN_GRANT = "CAMPAIGN_GRANT"
    """The operator grants its player a free-spin campaign (operator API)."""
    CAMPAIGN_CANCEL = "CAMPAIGN_CANCEL"
    """The operator cancels a free-spin campaign of its player (operator API)."""


class WinKind(StrEnum):
    """What a win is: a game's own payout, or money the game did not pay out of the stake."""

    REGULAR = "REGULAR"
    """The round's payout."""
    BONUS = "BONUS"
    """Provider-funded bonus money (a free round's or a bonus feature's win)."""
    JACKPOT = "JACKPOT"
    """A jackpot paid out (zero-stake credit)."""
    PROMO = "PROMO"
    """A promotion's prize: tournament, prize drop (zero-stake credit)."""


PROVIDER_ACTIONS = (Action.AUTHENTICATE, Action.BALANCE, Action.BET, Action.WIN,
                    Action.ROLLBACK)  # fmt: skip
"""The actions a provider's callback may carry (every protocol maps onto these); DEPOSIT,
WITHDRAW, CAMPAIGN_GRANT and CAMPAIGN_CANCEL come from the operator API only."""


class Status(StrEnum):
    """Answer to a provider (canonical protocol v1), most fundamental refusal first."""

    INVALID_REQUEST = "INVALID_REQUEST"
    DUPLICATE_CONFLICT = "DUPLICATE_CONFLICT"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    SESSION_EXPIRED = "SESSION_EXPIRED"
    GAME_NOT_ALLOWED = "GAME_NOT_ALLOWED"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    TRANSACTION_NOT_FOUND = "TRANSACTION_NOT_FOUND"
    BET_ROLLED_BACK = "BET_ROLLED_BACK"
    ROUND_CLOSED = "ROUND_CLOSED"
    """A bet on a round that is closed (by the provider, its end-round call, or the
    provider's auto-close policy): refused, no money moved."""
    PLAYER_BLOCKED = "PLAYER_BLOCKED"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    RETRY_LATER = "RETRY_LATER"
    OK = "OK"

    @property
    def is_transient(self) -> bool:
        return self is Status.RETRY_LATER


class CommandKind(StrEnum):
    DEBIT = "DEBIT"
    CREDIT = "CREDIT"
    CANCEL = "CANCEL"
    BALANCE = "BALANCE"


class ReplyStatus(StrEnum):
    OK = "OK"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    PLAYER_BLOCKED = "PLAYER_BLOCKED"
    LIMIT_REACHED = "LIMIT_REACHED"
    UNKNOWN_PLAYER = "UNKNOWN_PLAYER"
    ERROR = "ERROR"

    @property
    def is_transient(self) -> bool:
        return self is ReplyStatus.ERROR


REFUSAL_FOR_REPLY: dict[ReplyStatus, Status] = {
    ReplyStatus.INSUFFICIENT_FUNDS: Status.INSUFFICIENT_FUNDS,
    ReplyStatus.PLAYER_BLOCKED: Status.PLAYER_BLOCKED,
    ReplyStatus.LIMIT_REACHED: Status.LIMIT_EXCEEDED,
    ReplyStatus.UNKNOWN_PLAYER: Status.SESSION_NOT_FOUND,
}
"""How a final wallet refusal of a debit is answered to the provider."""
