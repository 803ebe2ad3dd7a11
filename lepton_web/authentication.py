"""Users' API tokens, checked against the digest that is stored (lepton_web.accounts)."""

from __future__ import annotations

from rest_framework.authentication import TokenAuthentication

from lepton_web.accounts import token_key_digest


class HashedTokenAuthentication(TokenAuthentication):
    """DRF's token authentication (``Authorization: Token <key>``), where the stored token is
    the key's digest rather than the key."""

    def authenticate_credentials(self, key):
        return super().authenticate_credentials(token_key_digest(key))
