"""Redlock: one lock over N independent Redis servers, held while a majority agrees.

    servers = [redis.from_url(url) for url in urls]        # 5 independent servers
    async with Redlock(servers, "invoice-42", ttl=10, timeout=5) as lock:
        await charge(customer, fence=lock.fence)

One attempt (antirez's algorithm, https://redis.io/docs/latest/develop/use/patterns/distributed-locks/):

1. Send `SET key token NX PX ttl` to every server at once, each with a short timeout
   (`server_timeout`), so a dead or stalled server costs that timeout, not a TTL.
   The attempt is decided as soon as its outcome is known: a majority granted, or too
   few are left to grant. The requests still out (a server paused with SIGSTOP answers
   nothing) run on in the background, bounded by `server_timeout`, and are undone there
   if the attempt failed; so a frozen minority costs an acquisition nothing. Release
   and extend decide the same way.
2. The lock is ours if a majority said yes and time is left. Each key was set after the
   attempt started, so it lives until at least started + ttl; the lock is valid until
   started + ttl - drift (1% of ttl + 2 ms, for clocks running at different rates), and
   that must still be ahead after the fencing round below.
3. Otherwise release it on every server at once, wait a random moment, try again.

Fencing tokens. Each server keeps a counter that the acquire script increments. The
token of an acquisition is the highest counter among the majority that granted it,
and before returning, the acquirer raises that majority's counters to the token. Any
later majority shares a server with this one, whose counter is now at least the token,
so a later acquisition's token is strictly higher. (This is the property Kleppmann
found missing in plain Redlock.) Counters expire after a day unused and a new one starts
at the server's clock, past the old one's tokens: see redis_lock.py.

Persistence. A server restarted without its data forgets the keys it granted: restart
3 of 5 and a second client takes a lock the first still holds. So at first use each
server is asked (CONFIG GET) for `appendonly yes` and `appendfsync always`, and the
lock refuses with NotDurable if an answering server has less. Pass
`unsafe_without_persistence=True` to run on such servers anyway (safe only if a
restarted server stays down longer than the TTL: antirez's "delayed restarts").
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from sdlab.failure import describe
from sdlab.locks.lock import ExpiringLock, LockError, LockLost
from sdlab.locks.redis_lock import Scripts, cleanup, fence_life, keys, milliseconds

CLOCK_DRIFT_FACTOR = 0.01

PENDING: Any = type("Pending", (), {"__repr__": lambda self: "PENDING"})()
"""The answer of a server that had not answered yet when the outcome was decided."""

Decided = Callable[[list[object]], bool]
Late = tuple[str, "asyncio.Future[int | None]"]  # an acquisition's token, and its fence


class NotDurable(LockError):
    """A Redlock server would forget the lock if restarted (no appendonly, or no fsync at
    every write). The message names the server and what to set."""


class Redlock(ExpiringLock):
    """A lock held on a majority of `servers` (independent Redis servers, not replicas).

    ttl: seconds the lock lives unless extended.
    timeout: default wait in `acquire()` / `async with` (None: for ever).
    server_timeout: seconds to wait for any one server within an attempt.
    auto_renew: extend every ttl/3 in the background while held; `lost` is set if a
        renewal fails (as RedisLock's).
    unsafe_without_persistence: skip the check that every server runs with
        `appendonly yes` and `appendfsync always` (see the module docstring).
    """

    def __init__(
        self,
        servers: Sequence[Redis],
        name: str,
        *,
        ttl: float = 10.0,
        timeout: float | None = None,
        server_timeout: float = 0.05,
        auto_renew: bool = False,
        unsafe_without_persistence: bool = False,
    ) -> None:
        super().__init__(name, ttl=ttl, timeout=timeout, auto_renew=auto_renew)
        if not servers:
            raise ValueError("Redlock needs at least one server")
        if server_timeout <= 0:
            raise ValueError("server_timeout must be positive")
        self.server_timeout = server_timeout
        self.unsafe_without_persistence = unsafe_without_persistence
        self.quorum = len(servers) // 2 + 1
        self.token = ""
        self._scripts = [Scripts.of(server) for server in servers]
        self._keys = keys(name)
        self._last_attempt = ""

    def __repr__(self) -> str:
        state = f"held, fence {self.fence}" if self.held else "free"
        return f"<Redlock {self.name!r} on {len(self._scripts)} servers, {state}>"

    async def extend(self, ttl: float | None = None) -> None:
        """Reset the TTL on every server; LockLost unless a majority still had it."""
        if not self._held:
            raise LockError(f"lock {self.name!r} is not held by this object")
        ttl = self.ttl if ttl is None else ttl
        started = time.monotonic()
        answers = await self._until_decided(
            lambda s: s.extend(keys=self._keys[:1], args=[self.token, milliseconds(ttl)]),
            self._settled(lambda a: a == 1),
        )
        extended = sum(1 for a in answers if a == 1)
        validity = ttl - (time.monotonic() - started) - self._drift(ttl)
        if extended < self.quorum or validity <= 0:
            self._lose()
            raise LockLost(
                f"lock {self.name!r}: only {extended} of {len(self._scripts)} servers "
                f"still held it at extend() (quorum {self.quorum})"
            )
        self._valid_until(started + ttl - self._drift(ttl))

    async def _try_acquire(self) -> bool:
        token = secrets.token_hex(16)
        try:
            return await self._attempt(token)
        except BaseException:
            # Cancelled (or failed) mid-attempt: some servers may have granted the lock
            # to `token`. Undo everywhere, whatever happens to this task.
            for scripts in self._scripts:
                cleanup(self._bounded(scripts.release(keys=self._keys[:1], args=[token])))
            raise

    async def _attempt(self, token: str) -> bool:
        # What late answers need to know: the fence if the attempt was won, else None.
        won: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        got = False
        try:
            got = await self._decide(token, won)
        finally:
            won.set_result(self.fence if got else None)
        return got

    async def _decide(self, token: str, won: asyncio.Future[int | None]) -> bool:
        started = time.monotonic()
        answers = await self._until_decided(
            lambda s: self._acquire_on(s, token),
            self._settled(lambda a: isinstance(a, int)),
            late=(token, won),
        )
        unsafe = [a for a in answers if isinstance(a, NotDurable)]
        granted = {i: int(a) for i, a in enumerate(answers) if isinstance(a, int)}
        # Every key was set after `started`, so each lives at least until started + ttl
        # by the server's clock; drift covers clocks running at different rates.
        valid_until = started + self.ttl - self._drift(self.ttl)
        fence = max(granted.values(), default=0)
        if not unsafe and len(granted) >= self.quorum and time.monotonic() < valid_until:
            behind = [i for i, counter in granted.items() if counter < fence]
            raised = not behind or await self._raise_fence(behind, fence, len(granted))
            if raised and time.monotonic() < valid_until:  # still valid after the raise
                self.token, self.fence = token, fence
                self._taken(valid_until)
                return True
        self._last_attempt = self._describe(answers)
        # Undo where we may hold it: where granted, and where the answer was lost (those
        # still out are undone in the background once they answer or time out).
        unsure = [i for i, a in enumerate(answers) if a is not None and a is not PENDING]
        await asyncio.gather(
            *(
                self._bounded(self._scripts[i].release(keys=self._keys[:1], args=[token]))
                for i in unsure
            ),
            return_exceptions=True,
        )
        if unsafe:
            raise unsafe[0]
        return False

    async def _acquire_on(self, scripts: Scripts, token: str) -> int | None:
        """The acquire script on one server, after its persistence check (once per
        client; NotDurable, as that server's answer, if it fails)."""
        if not self.unsafe_without_persistence and (why := await scripts.check_persistence()):
            raise NotDurable(
                f"lock {self.name!r}: Redis at {_address(scripts.client)} would forget the "
                f"lock if restarted: {why}. A restart of a majority would let a second "
                "client take a lock that is still held. Set `appendonly yes` and "
                "`appendfsync always` on every server (infra.redis(n, durable=True) does), "
                "or pass unsafe_without_persistence=True if a restarted server is kept "
                "down for longer than the TTL"
            )
        args: list[str | int] = [token, milliseconds(self.ttl), fence_life(self.ttl)]
        answer: int | None = await scripts.acquire(keys=self._keys, args=args)
        return answer

    async def _release(self) -> None:
        await self._giving_back()
        answers = await self._until_decided(
            lambda s: s.release(keys=self._keys[:1], args=[self.token]),
            self._settled(lambda a: a == 1),
        )
        released = sum(1 for a in answers if a == 1)
        not_ours = sum(1 for a in answers if a == 0)
        if released >= self.quorum:
            return
        if released + (len(answers) - released - not_ours) >= self.quorum:
            # Not lost as far as we know: too few servers answered to say either way.
            raise LockError(
                f"lock {self.name!r}: release() confirmed on only {released} of "
                f"{len(self._scripts)} servers ({self._describe_release(answers)}); the rest "
                "expire by themselves within the TTL"
            )
        raise LockLost(
            f"lock {self.name!r}: only {released} of {len(self._scripts)} servers still "
            f"held it at release() (quorum {self.quorum}); work done under it may have "
            "overlapped another holder's"
        )

    def _describe_release(self, answers: list[object]) -> str:
        return "; ".join(
            f"{_address(s.client)}: "
            + ("released" if a == 1 else "not ours" if a == 0 else _failure(a))
            for s, a in zip(self._scripts, answers, strict=True)
        )

    async def _raise_fence(self, behind: list[int], fence: int, granted: int) -> bool:
        """Raise the counters of the servers that granted us but lag behind `fence`;
        True if the whole granting majority now stores at least `fence`."""
        answers = await asyncio.gather(
            *(
                self._bounded(
                    self._scripts[i].raise_fence(
                        keys=self._keys[1:], args=[fence, fence_life(self.ttl)]
                    )
                )
                for i in behind
            ),
            return_exceptions=True,
        )
        raised = granted - len(behind) + sum(1 for a in answers if a == 1)
        return raised >= self.quorum

    def _settled(self, yes: Callable[[object], bool]) -> Decided:
        """Decided once a majority said yes, or once too few are left to say it."""
        n = len(self._scripts)

        def decided(answers: list[object]) -> bool:
            said_yes = sum(1 for a in answers if a is not PENDING and yes(a))
            said_no = sum(1 for a in answers if a is not PENDING and not yes(a))
            return said_yes >= self.quorum or said_no > n - self.quorum

        return decided

    async def _until_decided(
        self,
        call: Callable[[Scripts], Awaitable[Any]],
        decided: Decided,
        *,
        late: Late | None = None,
    ) -> list[object]:
        """`call(scripts)` on every server at once; the answers (or exceptions) as soon
        as `decided(answers)` holds, PENDING for those not in yet. These run on in the
        background; with `late = (token, won)` (an acquisition), each late answer is
        settled once the attempt is: see `_late`."""
        requests = [asyncio.ensure_future(self._bounded(call(s))) for s in self._scripts]
        answers: list[object] = [PENDING] * len(requests)
        waiting = set(requests)
        try:
            while waiting and not decided(answers):
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for request in done:
                    answers[requests.index(request)] = _outcome(request)
        except BaseException:
            for request in waiting:
                request.cancel()
            raise
        for request in waiting:
            scripts = self._scripts[requests.index(request)]
            cleanup(self._late(request, scripts, late))
        return answers

    async def _late(
        self, request: asyncio.Future[Any], scripts: Scripts, late: Late | None
    ) -> None:
        """A server's answer to an acquisition that was decided without it. Lost: a
        grant (or an unknown answer) is released. Won: a grant's counter is raised to
        the fence like the majority's, so that more servers than the majority carry it."""
        await asyncio.wait([request])
        answer = _outcome(request)  # retrieved, even if unused: no "never retrieved" log
        if late is None:
            return
        token, won = late
        fence = await won
        if fence is None and answer is not None:
            await self._bounded(scripts.release(keys=self._keys[:1], args=[token]))
        elif fence is not None and isinstance(answer, int) and answer < fence:
            args = [fence, fence_life(self.ttl)]
            await self._bounded(scripts.raise_fence(keys=self._keys[1:], args=args))

    async def _bounded(self, request: Awaitable[Any]) -> Any:
        async with asyncio.timeout(self.server_timeout):
            return await request

    def _drift(self, ttl: float) -> float:
        return ttl * CLOCK_DRIFT_FACTOR + 0.002

    def _describe(self, answers: list[object]) -> str:
        parts = []
        for scripts, answer in zip(self._scripts, answers, strict=True):
            where = _address(scripts.client)
            if isinstance(answer, int):
                parts.append(f"{where}: granted")
            elif answer is None:
                parts.append(f"{where}: held by another")
            elif answer is PENDING:
                parts.append(f"{where}: not answered when the attempt was decided")
            elif isinstance(answer, TimeoutError):
                parts.append(f"{where}: no answer within {self.server_timeout:g} s")
            else:
                parts.append(f"{where}: {_failure(answer)}")
        granted = sum(1 for a in answers if isinstance(a, int))
        return f"{granted} of {len(answers)} granted (quorum {self.quorum}): " + "; ".join(parts)

    def _timeout_message(self) -> str:
        return (
            f"lock {self.name!r} was not acquired within {self.timeout} s; "
            f"last attempt: {self._last_attempt}"
        )


def _address(client: Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


def _failure(answer: object) -> str:
    """A server's answer that was neither a grant nor a refusal: the error it raised."""
    if isinstance(answer, BaseException):
        return describe(answer).rstrip(".")
    return f"unexpected answer {answer!r}"


def _outcome(request: asyncio.Future[Any]) -> object:
    """A finished request's answer, or the exception it ended with."""
    if request.cancelled():
        return asyncio.CancelledError()
    return request.exception() or request.result()
