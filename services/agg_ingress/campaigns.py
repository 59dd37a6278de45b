"""The operator API's free-spin campaigns: grant and cancel.

``POST /v1/operators/{operator_id}/players/{player_id}/campaigns`` with a JSON body
``{campaign_id, provider_id, games, spins, bet_value, currency, expires_at}`` grants the
player ``spins`` free spins of ``bet_value`` minor units on ``games`` (1..50 game ids, each a
game of ``provider_id`` that the operator offers) until ``expires_at`` (RFC 3339, with a time
zone; not in the future: ``422 CAMPAIGN_EXPIRED``). The campaign id is the idempotency key,
per operator and player: a repeat with the same content gets the original answer (with the
spins left now), other content ``409 DUPLICATE_CONFLICT``.

``POST .../campaigns/{campaign_id}/cancel`` (empty body or ``{}``) cancels it: answered with
the spins left; a campaign that has already ended (used up, expired, cancelled) is answered
the same way and stays as it is; an unknown one ``404 CAMPAIGN_NOT_FOUND``.

Both are carried to the saga on the requests topic (actions ``CAMPAIGN_GRANT`` and
``CAMPAIGN_CANCEL``), in the player's order with their bets, and journaled there
(``CampaignGranted``, ``CampaignCancelled``; the saga's timer journals ``CampaignExpired``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agg_config.tenants import Operator, Tenants
from agg_domain.statuses import Status
from agg_ingress.protocol import ID_PATTERN, Invalid, OperatorRefusal, _Fields, _Malformed

FIELDS = frozenset(
    {"campaign_id", "provider_id", "games", "spins", "bet_value", "currency", "expires_at"}
)
GAMES_MAX = 50
"""Games one campaign may name."""
SPINS_MAX = 1_000_000
"""Spins one campaign may grant (the saga's bound)."""
NOT_FOUND = "CAMPAIGN_NOT_FOUND"
"""404: the player has no campaign of that id (at this operator)."""
EXPIRED = "CAMPAIGN_EXPIRED"
"""422: ``expires_at`` is not in the future (by the ingress's clock, or by the saga's when it
decides: the saga answers such a grant INVALID_REQUEST)."""

HTTP_STATUS: dict[str, int] = {
    Status.OK: 200,
    Status.INVALID_REQUEST: 400,
    Status.DUPLICATE_CONFLICT: 409,
    Status.TRANSACTION_NOT_FOUND: 404,
    EXPIRED: 422,
    Status.RETRY_LATER: 503,
    OperatorRefusal.UNKNOWN_GAME: 404,
    OperatorRefusal.GAME_NOT_ALLOWED: 403,
    OperatorRefusal.CURRENCY_NOT_SUPPORTED: 422,
}
"""How a campaign call is answered; any other status (none is expected) is 503, which is safe
to retry with the same campaign id."""


@dataclass(frozen=True)
class CampaignRequest:
    campaign_id: str
    provider_id: str
    games: tuple[str, ...]
    spins: int
    bet_value: int
    currency: str
    expires_at: datetime

    @property
    def expires_at_ms(self) -> int:
        return int(self.expires_at.timestamp() * 1000)


_LATEST = datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)


def _rfc3339(value: Any) -> datetime:
    if not isinstance(value, str):
        raise _Malformed("expires_at: an RFC 3339 date-time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _Malformed("expires_at: an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise _Malformed("expires_at: give a time zone (e.g. Z)")
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:  # an instant before 0001-01-01 or after 9999-12-31 in UTC
        return datetime.min.replace(tzinfo=UTC) if parsed.year == 1 else _LATEST
    return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)


def validate_campaign(body: dict[str, Any]) -> CampaignRequest | Invalid:
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        return Invalid(f"{unknown[0]}: not a field of a campaign")
    f = _Fields(body)
    try:
        campaign_id = f.ident("campaign_id", True)
        provider_id = f.ident("provider_id", True)
        games = body.get("games")
        if not isinstance(games, list) or not 1 <= len(games) <= GAMES_MAX:
            raise _Malformed(f"games: a list of 1..{GAMES_MAX} game ids")
        if not all(isinstance(g, str) and ID_PATTERN.fullmatch(g) for g in games):
            raise _Malformed(f"games: a list of 1..{GAMES_MAX} game ids")
        if len(set(games)) != len(games):
            raise _Malformed("games: each game once")
        spins = body.get("spins")
        if type(spins) is not int or not 1 <= spins <= SPINS_MAX:
            raise _Malformed(f"spins: a JSON integer 1..{SPINS_MAX}")
        bet_value = f.amount("bet_value", True, 1)
        currency = f.currency("currency", True)
        if body.get("expires_at") is None:
            raise _Malformed("expires_at: required")
        expires_at = _rfc3339(body["expires_at"])
    except _Malformed as exc:
        return Invalid(str(exc))
    assert campaign_id and provider_id and bet_value and currency
    return CampaignRequest(campaign_id, provider_id, tuple(games), spins, bet_value, currency,
                           expires_at)  # fmt: skip


def validate_cancel(body: object) -> Invalid | None:
    """A cancel's body: nothing, or an empty object."""
    if not isinstance(body, dict):
        return Invalid(str(body))
    if body:
        return Invalid(f"{sorted(body)[0]}: not a field of a cancel")
    return None


def campaign_refusal(tenants: Tenants, operator: Operator,
                     req: CampaignRequest) -> OperatorRefusal | None:  # fmt: skip
    """Why the operator may not grant this campaign, in the sessions' precedence: a game
    that does not exist or is not the provider's (404 ``UNKNOWN_GAME``), a provider the
    operator does not offer or that is disabled (403 ``GAME_NOT_ALLOWED``), a currency the
    operator does not use (422 ``CURRENCY_NOT_SUPPORTED``)."""
    for game_id in req.games:
        game = tenants.game(game_id)
        if game is None or game.provider != req.provider_id:
            return OperatorRefusal.UNKNOWN_GAME
    provider = tenants.provider(req.provider_id)
    if provider is None or not provider.enabled or req.provider_id not in operator.providers:
        return OperatorRefusal.GAME_NOT_ALLOWED
    if req.currency not in operator.currencies:
        return OperatorRefusal.CURRENCY_NOT_SUPPORTED
    return None


def rfc3339(ms: int) -> str:
    when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def http_status(status: str) -> int:
    return HTTP_STATUS.get(status, 503)
