"""Accounts: password hashing, users, and API tokens (issued, authenticated, revoked)."""

import pytest
from sqlalchemy import select

from dermscreen import accounts
from dermscreen.db import ApiToken, Role, User


def test_password_hash_is_argon2id_and_verifies():
    password_hash = accounts.hash_password("s3cret pass")
    assert password_hash.startswith("$argon2id$")
    assert "s3cret" not in password_hash
    assert accounts.verify_password(password_hash, "s3cret pass")
    assert not accounts.verify_password(password_hash, "wrong")
    assert not accounts.verify_password(None, "s3cret pass")
    assert not accounts.verify_password("not a hash", "s3cret pass")


def test_create_user_stores_only_the_hash(sessions, make_hospital):
    hospital = make_hospital()
    with sessions.begin() as session:
        user = accounts.create_user(session, " Derm@Example.ORG ", "dermatologist",
                                    hospital=hospital, password="pw-123456")
    with sessions() as session:
        stored = session.get(User, user.id)
        assert stored.email == "derm@example.org"
        assert stored.role is Role.DERMATOLOGIST
        assert stored.hospital_id == hospital.id
        assert accounts.verify_password(stored.password_hash, "pw-123456")


def test_non_admin_users_need_a_hospital(sessions):
    with sessions.begin() as session, pytest.raises(ValueError, match="must belong"):
        accounts.create_user(session, "x@example.org", Role.SUBMITTER)
    with sessions.begin() as session:
        admin = accounts.create_user(session, "root@example.org", Role.ADMIN)
    assert admin.hospital_id is None


def test_hospital_threshold_must_be_a_probability(sessions):
    with sessions.begin() as session, pytest.raises(ValueError, match="threshold"):
        accounts.create_hospital(session, "H", alert_threshold=1.5)


def test_token_is_shown_once_and_stored_hashed(sessions, make_token):
    token, plaintext = make_token()
    assert plaintext.startswith(accounts.TOKEN_PREFIX) and len(plaintext) > 40
    with sessions() as session:
        stored = session.scalars(select(ApiToken)).one()
        assert plaintext not in (stored.token_hash, stored.prefix)
        assert stored.prefix == plaintext[:10]


def test_authenticate_and_revoke_token(sessions, make_token):
    token, plaintext = make_token()
    with sessions.begin() as session:
        found = accounts.authenticate_token(session, plaintext)
        assert found is not None and found.id == token.id
        assert found.last_used_at is not None
        assert accounts.authenticate_token(session, plaintext + "x") is None
        assert accounts.authenticate_token(session, "") is None
        accounts.revoke_token(session, found)
    with sessions.begin() as session:
        assert accounts.authenticate_token(session, plaintext) is None
