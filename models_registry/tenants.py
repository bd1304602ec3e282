"""Tenants and their API keys; keys are shown once and stored as HMAC-SHA256(secret, key)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from models_registry.tables import ApiKey, Tenant

KEY_PREFIX = "trk_"


def hash_key(key: str, secret: str) -> str:
    """Keyed hash of an API key (keys are 256-bit random, so a fast keyed hash suffices)."""
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_tenant(session: Session, name: str, secret: str) -> tuple[Tenant, str]:
    """Create a tenant (or reuse the one with this name) and a fresh API key; returns (tenant, key)."""
    name = name.strip()
    if not name:
        raise ValueError("tenant name must not be empty")
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    key = new_key()
    session.add(ApiKey(tenant_id=tenant.id, key_hash=hash_key(key, secret), prefix=key[:10]))
    session.flush()
    return tenant, key


def tenant_id_for_key(session: Session, key: str, secret: str) -> str | None:
    """The tenant id owning an active key, or None."""
    row = session.execute(
        select(ApiKey.tenant_id).where(ApiKey.key_hash == hash_key(key, secret), ApiKey.revoked_at.is_(None))
    ).first()
    return None if row is None else str(row[0])
