"""Token-2022 ticket NFTs: transaction builders and account decoders (pure, no I/O).

A ticket is one Token-2022 mint, created and completed in ONE atomic transaction:

  0  create_account_with_seed  mint address = create_with_seed(payer, seed, Token-2022): the
                               address follows from (payment, ticket), so every retry targets the
                               same account and a second mint of the same ticket cannot land
  1  MetadataPointer init      the metadata lives on the mint itself (no Metaplex program)
  2  PermanentDelegate init    the platform may move or burn the token without the holder's
                               signature (resale, revocation after a refund)
  3  InitializeMint2           decimals 0, mint authority = payer, freeze authority = payer
  4  TokenMetadata initialize  name, symbol, uri (the ticket's facts are in the JSON at the uri)
  5  create ATA (idempotent)   the holder's associated token account
  6  MintTo 1
  7  SetAuthority(MintTokens, None)  supply is 1 forever

The mint account is created with exactly the bytes it ends with: base mint padded to 165, the
account type byte, MetadataPointer (4 + 64), PermanentDelegate (4 + 32) and the TokenMetadata TLV
(4 + update authority 32 + mint 32 + three length-prefixed strings + an empty additional-fields
vector 4), i.e. 354 + name + symbol + uri bytes; its lamports are the rent-exempt minimum for
that size, read from the chain.

Tickets minted with the earlier layout also carry their facts as additional metadata fields
(one TokenMetadata UpdateField after step 4 each). They are decoded like any other; the builder
still writes fields when given some, which only the tests do, to create such tickets.

Instructions solana-py has no builders for are encoded here by hand; the simple SPL ones are too,
because building them with `construct` costs more than the rest of the transaction. Layouts are
from the spl-token-2022 and spl-token-metadata-interface sources; the tests check every field on
a real Token-2022 program (LiteSVM).

Also here, because they follow from the same wire format: account sizes and what one ticket
costs the payer at the chain's rent (`mint_cost`), the transaction size estimate the request
rules compare with the 1,232-byte limit, and address parsing (base58 of exactly 32 bytes).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountWithSeedParams, create_account_with_seed
from solders.transaction import Transaction

from nft_service.adapters.chain.base import Rent
from nft_service.domain.metadata import TicketMetadata

TOKEN_2022 = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
ASSOCIATED_TOKEN = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
SYSTEM_PROGRAM = Pubkey.from_string("11111111111111111111111111111111")
MEMO_PROGRAM = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")

MAX_TRANSACTION_SIZE = 1232  # bytes on the wire (IPv6 MTU minus headers)

# Token-2022 instruction tags.
_IX_MINT_TO = 7
_IX_SET_AUTHORITY = 6
_IX_FREEZE = 10
_IX_TRANSFER_CHECKED = 12
_IX_BURN_CHECKED = 15
_IX_INITIALIZE_MINT2 = 20
_IX_PERMANENT_DELEGATE = 35
_IX_METADATA_POINTER = 39
_AUTHORITY_MINT_TOKENS = 0

# Extension types (TLV) in Token-2022 account data.
EXT_IMMUTABLE_OWNER = 7
EXT_PERMANENT_DELEGATE = 12
EXT_METADATA_POINTER = 18
EXT_TOKEN_METADATA = 19

MINT_BASE_LEN = 82
ACCOUNT_BASE_LEN = 165
# Mint data before TokenMetadata: base padded to 165, account type byte, MetadataPointer TLV
# (4 + 64) and PermanentDelegate TLV (4 + 32).
MINT_SPACE = ACCOUNT_BASE_LEN + 1 + (4 + 64) + (4 + 32)
# TokenMetadata TLV without its strings: TLV header, update authority, mint, the three strings'
# length prefixes and the additional fields' (empty) vector length.
METADATA_FIXED = 4 + 32 + 32 + 3 * 4 + 4
TOKEN_ACCOUNT_SPACE = ACCOUNT_BASE_LEN + 1 + 4  # Token-2022 ATA: ImmutableOwner TLV (empty)
SIGNATURE_FEE = 5000  # lamports per signature (a mint has one: the payer)

# Instruction indices that move the payer's lamports, for error classification (a System error
# there means "insufficient funds" or "address already in use", see base.py).
MINT_FUNDING = frozenset({0})  # create_account_with_seed
TRANSFER_FUNDING = frozenset({1})  # the destination's ATA (after the memo)


def _disc(name: str) -> bytes:
    return hashlib.sha256(f"spl_token_metadata_interface:{name}".encode()).digest()[:8]


_MD_INITIALIZE = _disc("initialize_account")
_MD_UPDATE_FIELD = _disc("updating_field")
_FIELD_KEY = 3  # borsh enum Field::Key(String); 0-2 are name, symbol, uri


def _borsh_str(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("<I", len(raw)) + raw


def associated_token_address(owner: Pubkey, mint: Pubkey) -> Pubkey:
    address, _ = Pubkey.find_program_address(
        [bytes(owner), bytes(TOKEN_2022), bytes(mint)], ASSOCIATED_TOKEN
    )
    return address


def mint_address(payer: Pubkey, seed: str) -> Pubkey:
    return Pubkey.create_with_seed(payer, seed, TOKEN_2022)


def tlv_len(metadata: TicketMetadata) -> int:
    """Bytes the TokenMetadata extension adds to the mint (TLV header included)."""
    strings = sum(len(s.encode()) for s in (metadata.name, metadata.symbol, metadata.uri))
    fields = sum(len(_borsh_str(k)) + len(_borsh_str(v)) for k, v in metadata.fields)
    return METADATA_FIXED + strings + fields


def mint_account_len(metadata: TicketMetadata) -> int:
    """Size of a ticket's mint account once its metadata is written."""
    return MINT_SPACE + tlv_len(metadata)


@dataclass(frozen=True, slots=True)
class MintCost:
    """What one ticket costs the payer: the rent-exempt minimums of the mint and of the holder's
    token account (at the rent read from the chain) and the signature fee."""

    mint_size: int
    mint_rent: int
    token_account_rent: int
    fee: int = SIGNATURE_FEE

    @property
    def total(self) -> int:
        return self.mint_rent + self.token_account_rent + self.fee


def mint_cost(metadata: TicketMetadata, rent: Rent) -> MintCost:
    """The payer's cost of minting a ticket with this metadata at `rent`."""
    size = mint_account_len(metadata)
    return MintCost(size, rent.exempt(size), rent.exempt(TOKEN_ACCOUNT_SPACE))


def parse_address(value: str) -> Pubkey | None:
    """A base58 Solana address (exactly 32 bytes), or None when `value` is not one."""
    if not 32 <= len(value) <= 44:
        return None
    try:
        return Pubkey.from_string(value)
    except ValueError:
        return None


def is_address(value: str) -> bool:
    return parse_address(value) is not None


def _ix(accounts: Sequence[AccountMeta], data: bytes, program: Pubkey = TOKEN_2022) -> Instruction:
    return Instruction(program, data, list(accounts))


def mint_instructions(
    *,
    payer: Pubkey,
    seed: str,
    holder: Pubkey,
    metadata: TicketMetadata,
    mint_lamports: int,
) -> list[Instruction]:
    """The ordered instructions of one ticket mint (module docstring)."""
    mint = mint_address(payer, seed)
    ata = associated_token_address(holder, mint)
    w_mint = AccountMeta(mint, is_signer=False, is_writable=True)
    authority = AccountMeta(payer, is_signer=True, is_writable=False)
    ixs = [
        create_account_with_seed(
            CreateAccountWithSeedParams(
                from_pubkey=payer,
                to_pubkey=mint,
                base=payer,
                seed=seed,
                lamports=mint_lamports,
                space=MINT_SPACE,
                owner=TOKEN_2022,
            )
        ),
        _ix([w_mint], bytes([_IX_METADATA_POINTER, 0]) + bytes(payer) + bytes(mint)),
        _ix([w_mint], bytes([_IX_PERMANENT_DELEGATE]) + bytes(payer)),
        _ix([w_mint], bytes([_IX_INITIALIZE_MINT2, 0]) + bytes(payer) + b"\x01" + bytes(payer)),
        _ix(
            [w_mint, authority, AccountMeta(mint, False, False), authority],
            _MD_INITIALIZE
            + _borsh_str(metadata.name)
            + _borsh_str(metadata.symbol)
            + _borsh_str(metadata.uri),
        ),
    ]
    for key, value in metadata.fields:
        ixs.append(
            _ix(
                [w_mint, authority],
                _MD_UPDATE_FIELD + bytes([_FIELD_KEY]) + _borsh_str(key) + _borsh_str(value),
            )
        )
    ixs.append(
        Instruction(
            ASSOCIATED_TOKEN,
            b"\x01",  # CreateIdempotent
            [
                AccountMeta(payer, True, True),
                AccountMeta(ata, False, True),
                AccountMeta(holder, False, False),
                AccountMeta(mint, False, False),
                AccountMeta(SYSTEM_PROGRAM, False, False),
                AccountMeta(TOKEN_2022, False, False),
            ],
        )
    )
    ixs.append(
        _ix(
            [w_mint, AccountMeta(ata, False, True), authority],
            bytes([_IX_MINT_TO]) + struct.pack("<Q", 1),
        )
    )
    ixs.append(_ix([w_mint, authority], bytes([_IX_SET_AUTHORITY, _AUTHORITY_MINT_TOKENS, 0])))
    return ixs


def memo(text: str, signer: Pubkey) -> Instruction:
    """A memo naming the operation: makes otherwise identical transfers distinct transactions
    (an identical one within the blockhash window would be dropped as already processed) and
    leaves an audit trail on chain."""
    return Instruction(MEMO_PROGRAM, text.encode(), [AccountMeta(signer, True, False)])


def transfer_instructions(
    *,
    payer: Pubkey,
    mint: Pubkey,
    source: Pubkey,
    destination_owner: Pubkey,
    note: str,
) -> list[Instruction]:
    """Move the ticket from token account `source` to the destination owner's ATA, signed by
    the platform as permanent delegate."""
    destination = associated_token_address(destination_owner, mint)
    return [
        memo(note, payer),
        Instruction(
            ASSOCIATED_TOKEN,
            b"\x01",
            [
                AccountMeta(payer, True, True),
                AccountMeta(destination, False, True),
                AccountMeta(destination_owner, False, False),
                AccountMeta(mint, False, False),
                AccountMeta(SYSTEM_PROGRAM, False, False),
                AccountMeta(TOKEN_2022, False, False),
            ],
        ),
        _ix(
            [
                AccountMeta(source, False, True),
                AccountMeta(mint, False, False),
                AccountMeta(destination, False, True),
                AccountMeta(payer, True, False),
            ],
            bytes([_IX_TRANSFER_CHECKED]) + struct.pack("<QB", 1, 0),
        ),
    ]


def burn_instructions(
    *, payer: Pubkey, mint: Pubkey, account: Pubkey, note: str
) -> list[Instruction]:
    """Burn the ticket with the permanent delegate: supply becomes 0."""
    return [
        memo(note, payer),
        _ix(
            [
                AccountMeta(account, False, True),
                AccountMeta(mint, False, True),
                AccountMeta(payer, True, False),
            ],
            bytes([_IX_BURN_CHECKED]) + struct.pack("<QB", 1, 0),
        ),
    ]


def freeze_instructions(
    *, payer: Pubkey, mint: Pubkey, account: Pubkey, note: str
) -> list[Instruction]:
    """Freeze the holder's token account with the freeze authority."""
    return [
        memo(note, payer),
        _ix(
            [
                AccountMeta(account, False, True),
                AccountMeta(mint, False, False),
                AccountMeta(payer, True, False),
            ],
            bytes([_IX_FREEZE]),
        ),
    ]


def sign(
    instructions: Sequence[Instruction],
    payer: Keypair,
    blockhash: Hash,
    payer_key: Pubkey | None = None,
) -> Transaction:
    """The transaction of `instructions`, paid and signed by `payer` alone (every transaction
    here has that one signer). `payer_key`, the payer's public key kept by the caller, spares
    deriving it from the secret, and signing the message bytes directly spares
    `Transaction([payer], ...)` deriving it twice more: each derivation costs about as much as
    the signature itself."""
    message = Message.new_with_blockhash(list(instructions), payer_key or payer.pubkey(), blockhash)
    if message.header.num_required_signatures != 1:
        raise ValueError("sign() signs with the payer only")
    return Transaction.populate(message, [payer.sign_message(bytes(message))])


# Per additional field: program index, account count, two account indices, data length (<= 2),
# discriminator (8), Field::Key tag (1), two string length prefixes (8).
_FIELD_OVERHEAD = 1 + 1 + 2 + 2 + 8 + 1 + 8


@cache
def _base_size() -> int:
    """Wire size of a mint transaction with empty name/symbol/uri and no fields."""
    payer = Pubkey.new_unique()
    ixs = mint_instructions(
        payer=payer,
        seed="0" * 32,
        holder=Pubkey.new_unique(),
        metadata=TicketMetadata(name="", symbol="", uri=""),
        mint_lamports=1,
    )
    message = Message.new_with_blockhash(ixs, payer, Hash.default())
    return len(bytes(Transaction.new_unsigned(message)))


def estimated_mint_size(metadata: TicketMetadata) -> int:
    """Wire size of the mint transaction of a ticket with this metadata, from the lengths alone
    (exact up to the compact length prefixes, rounded up: it never under-estimates)."""
    size = _base_size() + 1  # +1: the initialize data's length prefix may grow to two bytes
    size += sum(len(s.encode()) for s in (metadata.name, metadata.symbol, metadata.uri))
    size += sum(_FIELD_OVERHEAD + len(k.encode()) + len(v.encode()) for k, v in metadata.fields)
    return size


# ---------------------------------------------------------------------------------------------
# Decoding


class DecodeError(ValueError):
    """Account data is not what a Token-2022 mint or token account should look like."""


def _coption_pubkey(data: bytes, offset: int) -> Pubkey | None:
    tag = struct.unpack_from("<I", data, offset)[0]
    return Pubkey.from_bytes(data[offset + 4 : offset + 36]) if tag == 1 else None


def _extensions(data: bytes) -> dict[int, bytes]:
    """TLV extensions after the account-type byte (Token-2022 only)."""
    found: dict[int, bytes] = {}
    offset = ACCOUNT_BASE_LEN + 1
    while offset + 4 <= len(data):
        ext_type, length = struct.unpack_from("<HH", data, offset)
        if ext_type == 0:  # uninitialized padding
            break
        found[ext_type] = data[offset + 4 : offset + 4 + length]
        offset += 4 + length
    return found


def _read_str(data: bytes, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", data, offset)
    start = offset + 4
    return data[start : start + length].decode(), start + length


@dataclass(frozen=True, slots=True)
class MintAccount:
    """A decoded Token-2022 mint with its on-mint metadata."""

    supply: int
    decimals: int
    mint_authority: Pubkey | None
    freeze_authority: Pubkey | None
    permanent_delegate: Pubkey | None
    metadata_address: Pubkey | None
    update_authority: Pubkey | None
    name: str
    symbol: str
    uri: str
    fields: dict[str, str]


def decode_mint(data: bytes) -> MintAccount:
    if len(data) < MINT_BASE_LEN:
        raise DecodeError("too short for a mint")
    mint_authority = _coption_pubkey(data, 0)
    supply = struct.unpack_from("<Q", data, 36)[0]
    decimals = data[44]
    if not data[45]:
        raise DecodeError("mint is not initialized")
    freeze_authority = _coption_pubkey(data, 46)
    exts = _extensions(data) if len(data) > ACCOUNT_BASE_LEN else {}
    if len(data) > ACCOUNT_BASE_LEN and data[ACCOUNT_BASE_LEN] != 1:
        raise DecodeError("account type is not a mint")
    delegate = exts.get(EXT_PERMANENT_DELEGATE)
    pointer = exts.get(EXT_METADATA_POINTER)
    name = symbol = uri = ""
    fields: dict[str, str] = {}
    update_authority = None
    metadata = exts.get(EXT_TOKEN_METADATA)
    if metadata is not None:
        update_authority = Pubkey.from_bytes(metadata[0:32])
        offset = 64
        name, offset = _read_str(metadata, offset)
        symbol, offset = _read_str(metadata, offset)
        uri, offset = _read_str(metadata, offset)
        (count,) = struct.unpack_from("<I", metadata, offset)
        offset += 4
        for _ in range(count):
            key, offset = _read_str(metadata, offset)
            value, offset = _read_str(metadata, offset)
            fields[key] = value
    return MintAccount(
        supply=supply,
        decimals=decimals,
        mint_authority=mint_authority,
        freeze_authority=freeze_authority,
        permanent_delegate=Pubkey.from_bytes(delegate) if delegate else None,
        metadata_address=Pubkey.from_bytes(pointer[32:64]) if pointer else None,
        update_authority=update_authority,
        name=name,
        symbol=symbol,
        uri=uri,
        fields=fields,
    )


@dataclass(frozen=True, slots=True)
class TokenAccountState:
    mint: Pubkey
    owner: Pubkey
    amount: int
    frozen: bool


def decode_token_account(data: bytes) -> TokenAccountState:
    if len(data) < ACCOUNT_BASE_LEN:
        raise DecodeError("too short for a token account")
    state = data[108]
    if state == 0:
        raise DecodeError("token account is not initialized")
    return TokenAccountState(
        mint=Pubkey.from_bytes(data[0:32]),
        owner=Pubkey.from_bytes(data[32:64]),
        amount=struct.unpack_from("<Q", data, 64)[0],
        frozen=state == 2,
    )
