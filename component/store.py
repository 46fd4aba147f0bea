"""Async repository over the three tables: one short transaction per call.

Secrets are sealed with the SecretBox before they reach a row and opened only when an
Account is handed to a bridge, so nothing else in the process sees them in clear.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bridges.base import Account
from component.crypto import SecretBox
from component.db import writer
from component.models import AccountRow, ArchiveRow, ChatReferenceRow, RecordRow, UserRow

_T = TypeVar("_T")


def _record_is(account_id: int, kind: str, key: str) -> tuple[ColumnElement[bool], ...]:
    return RecordRow.account_id == account_id, RecordRow.kind == kind, RecordRow.key == key


class Store:
    def __init__(self, engine: AsyncEngine, box: SecretBox, concurrency: int = 10) -> None:
        """`concurrency`: database sessions open at once, at most (see `_db`)."""
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._writes = async_sessionmaker(writer(engine), expire_on_commit=False)
        self._box = box
        self._turns = asyncio.Semaphore(concurrency)

    @asynccontextmanager
    async def _db(self, *, begin: bool = False) -> AsyncIterator[AsyncSession]:
        """A database session, once one of `concurrency` turns is free; with `begin`,
        a write transaction (`component.db.writer`).

        A thousand sessions starting together (a failover) each read and write their
        records at once; beyond the pool's connections they would queue in the pool,
        whose wait times out (`database_pool.timeout`) and fails the call. Waiting for a
        turn here has no timeout, and leaves the pool's other connections to the
        archive and the cluster leases.
        """
        async with self._turns:
            if begin:
                async with self._writes.begin() as db:
                    yield db
            else:
                async with self._sessions() as db:
                    yield db

    async def _write(self, work: Callable[[AsyncSession], Awaitable[_T]]) -> _T:
        """`work` in a write transaction, run again if it lost a race for a unique key.

        On PostgreSQL two transactions that both find no user (or record) row both add
        it, and the later commit breaks the unique key; run again, the loser finds the
        winner's row. (On SQLite writes take turns and never race.)
        """
        try:
            return await self._transaction(work)
        except IntegrityError:
            return await self._transaction(work)

    async def _transaction(self, work: Callable[[AsyncSession], Awaitable[_T]]) -> _T:
        async with self._db(begin=True) as db:
            return await work(db)

    async def _account_row(self, db: AsyncSession, user: str, bridge: str) -> AccountRow | None:
        query = (
            select(AccountRow)
            .join(UserRow, AccountRow.user_id == UserRow.id)
            .where(UserRow.jid == user, AccountRow.bridge == bridge)
        )
        return (await db.execute(query)).scalar_one_or_none()

    def _to_account(self, user: str, row: AccountRow) -> Account:
        return Account(
            user=user,
            bridge=row.bridge,
            settings=dict(row.settings),
            secrets=self._box.open(row.secrets) if row.secrets else {},
            state=dict(row.state),
        )

    async def get_account(self, user: str, bridge: str) -> Account | None:
        async with self._db() as db:
            row = await self._account_row(db, user, bridge)
            return self._to_account(user, row) if row else None

    async def has_account(self, user: str, bridge: str) -> bool:
        """Whether `user` is registered on `bridge` (nothing decrypted)."""
        query = (
            select(AccountRow.id)
            .join(UserRow, AccountRow.user_id == UserRow.id)
            .where(UserRow.jid == user, AccountRow.bridge == bridge)
        )
        async with self._db() as db:
            return (await db.execute(query)).first() is not None

    async def accounts(self, bridge: str) -> list[Account]:
        """Every account on `bridge`, for sessions that run while their user is offline."""
        async with self._db() as db:
            rows = await db.execute(
                select(UserRow.jid, AccountRow)
                .join(UserRow, AccountRow.user_id == UserRow.id)
                .where(AccountRow.bridge == bridge)
                .order_by(UserRow.jid)
            )
            return [self._to_account(jid, row) for jid, row in rows]

    async def registrations(self) -> list[tuple[str, str]]:
        """(user, bridge) for every account, for the operator's `users list`."""
        async with self._db() as db:
            rows = await db.execute(
                select(UserRow.jid, AccountRow.bridge)
                .join(AccountRow, AccountRow.user_id == UserRow.id)
                .order_by(UserRow.jid, AccountRow.bridge)
            )
            return [(jid, bridge) for jid, bridge in rows]

    async def save_account(
        self,
        user: str,
        bridge: str,
        *,
        settings: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> Account:
        """Create or update the account; only the parts given are replaced."""

        async def work(db: AsyncSession) -> Account:
            row = await self._account_row(db, user, bridge)
            if row is None:
                user_row = (
                    await db.execute(select(UserRow).where(UserRow.jid == user))
                ).scalar_one_or_none()
                if user_row is None:
                    user_row = UserRow(jid=user)
                    db.add(user_row)
                    await db.flush()
                row = AccountRow(user_id=user_row.id, bridge=bridge, settings={}, state={})
                db.add(row)
            if settings is not None:
                row.settings = dict(settings)
            if secrets is not None:
                # Nothing to seal: most IRC users store no password, and sealing
                # their empty mapping loaded `cryptography` (about 8 MiB of RSS).
                row.secrets = self._box.seal(secrets) if secrets else ""
            if state is not None:
                row.state = dict(state)
            return self._to_account(user, row)

        return await self._write(work)

    async def remove_account(self, user: str, bridge: str) -> bool:
        """Delete the account, its records, archive and chat references, and the user
        once no account is left."""

        async def work(db: AsyncSession) -> bool:
            row = await self._account_row(db, user, bridge)
            if row is None:
                return False
            await db.execute(delete(RecordRow).where(RecordRow.account_id == row.id))
            await db.execute(delete(ArchiveRow).where(ArchiveRow.account_id == row.id))
            await db.execute(delete(ChatReferenceRow).where(ChatReferenceRow.account_id == row.id))
            await db.delete(row)
            await db.flush()
            remaining = await db.execute(
                select(AccountRow.id).where(AccountRow.user_id == row.user_id).limit(1)
            )
            if remaining.first() is None:
                await db.execute(delete(UserRow).where(UserRow.id == row.user_id))
            return True

        return await self._write(work)

    async def _account_id(self, db: AsyncSession, user: str, bridge: str) -> int:
        row = await self._account_row(db, user, bridge)
        if row is None:
            raise LookupError(f"{user} has no account on {bridge}")
        return row.id

    async def put_record(
        self, user: str, bridge: str, kind: str, key: str, data: Mapping[str, Any]
    ) -> None:
        async def work(db: AsyncSession) -> None:
            account_id = await self._account_id(db, user, bridge)
            existing = await db.execute(select(RecordRow).where(*_record_is(account_id, kind, key)))
            row = existing.scalar_one_or_none()
            if row is None:
                db.add(RecordRow(account_id=account_id, kind=kind, key=key, data=dict(data)))
            else:
                row.data = dict(data)

        await self._write(work)

    async def get_record(
        self, user: str, bridge: str, kind: str, key: str
    ) -> dict[str, Any] | None:
        async with self._db() as db:
            account_id = await self._account_id(db, user, bridge)
            row = await db.execute(select(RecordRow.data).where(*_record_is(account_id, kind, key)))
            data = row.scalar_one_or_none()
            return dict(data) if data is not None else None

    async def list_records(
        self, user: str, bridge: str, kind: str
    ) -> list[tuple[str, dict[str, Any]]]:
        """Records of one kind in the order they were first written."""
        async with self._db() as db:
            account_id = await self._account_id(db, user, bridge)
            rows = await db.execute(
                select(RecordRow.key, RecordRow.data)
                .where(RecordRow.account_id == account_id, RecordRow.kind == kind)
                .order_by(RecordRow.id)
            )
            return [(key, dict(data)) for key, data in rows]

    async def delete_record(self, user: str, bridge: str, kind: str, key: str) -> None:
        async def work(db: AsyncSession) -> None:
            account_id = await self._account_id(db, user, bridge)
            await db.execute(delete(RecordRow).where(*_record_is(account_id, kind, key)))

        await self._write(work)


@dataclass(frozen=True)
class AccountStorage:
    """The `bridges.base.AccountStore` of one account: the Store bound to (user, bridge)."""

    store: Store
    user: str
    bridge: str

    async def save_account(
        self,
        *,
        settings: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        await self.store.save_account(
            self.user, self.bridge, settings=settings, secrets=secrets, state=state
        )

    async def put_record(self, kind: str, key: str, data: Mapping[str, Any]) -> None:
        await self.store.put_record(self.user, self.bridge, kind, key, data)

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        return await self.store.get_record(self.user, self.bridge, kind, key)

    async def list_records(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return await self.store.list_records(self.user, self.bridge, kind)

    async def delete_record(self, kind: str, key: str) -> None:
        await self.store.delete_record(self.user, self.bridge, kind, key)
