"""AWS KMS through moto's server mode (the `kms_endpoint` fixture, `meshdev.embedded.MotoServer`),
reached by boto3 over HTTP as the integration service's vault will reach AWS KMS: a data key per
credential from GenerateDataKey, bound to its encryption context; Encrypt / Decrypt; ReEncrypt
under a new key (rotation); and the envelope the vault builds on it (AES-256-GCM with the
associated data), with the one place moto differs from AWS made visible.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from meshdev.embedded import MotoServer
from meshdev.testing.kms import KmsEndpoint

CONTEXT = {"connection_id": "c-123", "provider": "quickbooks", "key_version": "1"}


@pytest.fixture
def kms(kms_endpoint: KmsEndpoint) -> Iterator[Any]:
    yield boto3.client("kms", **kms_endpoint.client_kwargs())


def test_data_keys_are_bound_to_their_context_and_re_encrypt_moves_them(kms: Any) -> None:
    client = kms
    key_id = client.create_key(Description="vault kek v1")["KeyMetadata"]["KeyId"]
    data_key = client.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=CONTEXT)
    assert len(data_key["Plaintext"]) == 32
    wrapped = data_key["CiphertextBlob"]
    assert wrapped != data_key["Plaintext"]

    unwrapped = client.decrypt(CiphertextBlob=wrapped, EncryptionContext=CONTEXT)
    assert unwrapped["Plaintext"] == data_key["Plaintext"]
    for other in ({**CONTEXT, "connection_id": "c-999"}, {}):
        with pytest.raises(ClientError) as refused:
            client.decrypt(CiphertextBlob=wrapped, EncryptionContext=other)
        assert refused.value.response["Error"]["Code"] == "InvalidCiphertextException"

    # Rotation: the wrapped key moves under the new key without the plaintext leaving KMS.
    new_key = client.create_key(Description="vault kek v2")["KeyMetadata"]["KeyId"]
    moved = client.re_encrypt(
        CiphertextBlob=wrapped,
        SourceEncryptionContext=CONTEXT,
        DestinationKeyId=new_key,
        DestinationEncryptionContext={**CONTEXT, "key_version": "2"},
    )
    assert moved["KeyId"].endswith(new_key) and moved["SourceKeyId"].endswith(key_id)
    again = client.decrypt(
        CiphertextBlob=moved["CiphertextBlob"], EncryptionContext={**CONTEXT, "key_version": "2"}
    )
    assert again["Plaintext"] == data_key["Plaintext"] and again["KeyId"].endswith(new_key)

    small = client.encrypt(KeyId=new_key, Plaintext=b"refresh-token", EncryptionContext=CONTEXT)
    assert (
        client.decrypt(CiphertextBlob=small["CiphertextBlob"], EncryptionContext=CONTEXT)[
            "Plaintext"
        ]
        == b"refresh-token"
    )


def test_the_vault_envelope_round_trips_and_refuses_a_flipped_byte(kms: Any) -> None:
    client = kms
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    data_key = client.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=CONTEXT)
    aad = b"c-123|quickbooks|1"
    nonce = os.urandom(12)
    sealed = AESGCM(data_key["Plaintext"]).encrypt(nonce, b'{"refresh_token":"AB11..."}', aad)

    # Later: only the wrapped key, nonce, ciphertext and context are stored.
    plain_key = client.decrypt(
        CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext=CONTEXT
    )["Plaintext"]
    assert AESGCM(plain_key).decrypt(nonce, sealed, aad) == b'{"refresh_token":"AB11..."}'
    flipped = bytes([sealed[0] ^ 1]) + sealed[1:]
    for ciphertext, associated in ((flipped, aad), (sealed, b"c-124|quickbooks|1")):
        with pytest.raises(InvalidTag):
            AESGCM(plain_key).decrypt(nonce, ciphertext, associated)


def test_moto_still_decrypts_under_a_disabled_key(kms: Any) -> None:
    """AWS refuses (DisabledException / KMSInvalidStateException); moto does not. Tests of
    crypto-shredding must destroy the wrapped data key rather than rely on disabling the KEK."""
    client = kms
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    wrapped = client.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionContext=CONTEXT)[
        "CiphertextBlob"
    ]
    client.disable_key(KeyId=key_id)
    assert client.decrypt(CiphertextBlob=wrapped, EncryptionContext=CONTEXT)["Plaintext"] == b"x"


def test_moto_server_process_resets(tmp_path: Path) -> None:
    with MotoServer(tmp_path) as server:
        client = boto3.client(
            "kms", endpoint_url=server.url, region_name=server.region, **server.credentials
        )
        client.create_key()
        assert len(client.list_keys()["Keys"]) == 1
        server.reset()
        assert client.list_keys()["Keys"] == []
