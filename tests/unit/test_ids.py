"""The one identifier rule (schemas/ids.py): a table of accepted and refused values per kind of
id, and a seeded property that every accepted id is a valid NATS name where it is used."""

from __future__ import annotations

import pytest
from hypothesis import given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from schemas.ids import (
    API_KEY_ID_PATTERN,
    COMMAND_ID_PATTERN,
    INSTANCE_ID_PATTERN,
    command_id_problem,
    is_api_key_id,
    is_command_id,
    is_endpoint_id,
    is_instance_id,
    is_kv_key,
    is_subject_token,
    new_command_id,
)
from schemas.instances import ENDPOINT_ID_PATTERN, send_record_key
from wabus.settings import parse_api_keys

SECRET = "s" * 20

# Values that broke the old rules, or that sit right at an edge of the new one.
NATS_BREAKERS = ["a.", "a..b", ".a", "a b", "a*", "a>", "a\t", "a\n", "é", "aé", "a.*", "a.>"]

COMMAND_IDS = [
    *[(value, False) for value in NATS_BREAKERS],
    ("", False),
    ("x" * 129, False),
    ("-a", False),
    ("_a", False),
    ("=a", False),
    ("a/b", False),
    ("a", True),
    ("Z", True),
    ("0", True),
    ("order-42", True),
    ("order.42", True),
    ("a.b.c", True),
    ("a=b", True),
    ("a_b-c=", True),
    ("reply-evt_0123abcd", True),
    ("x" * 128, True),
]
INSTANCE_IDS = [
    *[(value, False) for value in NATS_BREAKERS],
    ("", False),
    ("Acme", False),
    ("-a", False),
    ("a.b", False),
    ("a=b", False),
    ("a" * 64, False),
    ("acme", True),
    ("a-b_c9", True),
    ("0", True),
    ("a" * 63, True),
]
API_KEY_IDS = [
    *[(value, False) for value in NATS_BREAKERS],
    ("", False),
    ("a=b", False),
    ("-a", False),
    ("a" * 65, False),
    ("main", True),
    ("main.v2", True),
    ("K_1-2", True),
    ("a" * 64, True),
]


@pytest.mark.parametrize(("value", "ok"), COMMAND_IDS)
def test_command_ids_and_idempotency_keys(value: str, ok: bool) -> None:
    assert is_command_id(value) is ok
    assert (command_id_problem(value) is None) is ok
    if ok:  # where a command id is used: the suffix of its send record key
        assert is_kv_key(send_record_key("acme", value))


@pytest.mark.parametrize(("value", "ok"), INSTANCE_IDS)
def test_instance_ids(value: str, ok: bool) -> None:
    assert is_instance_id(value) is ok
    if ok:  # a subject token (`wa.cmd.<instance>.send`) and a KV key (config, status, leases)
        assert is_subject_token(value)
        assert is_kv_key(value)


@pytest.mark.parametrize(("value", "ok"), INSTANCE_IDS)
def test_endpoint_ids_follow_the_instance_rule(value: str, ok: bool) -> None:
    assert is_endpoint_id(value) is ok
    if ok:  # a subject token of dead letters: `wa.dlq.<instance>.<endpoint>.<type>`
        assert is_subject_token(value)


@pytest.mark.parametrize(("value", "ok"), API_KEY_IDS)
def test_api_key_ids(value: str, ok: bool) -> None:
    assert is_api_key_id(value) is ok
    if ok:
        assert is_kv_key(value)
        assert set(parse_api_keys([f"{value}:{SECRET}"])) == {value}
    else:
        with pytest.raises(ValueError, match="WABUS_API_KEYS") as refused:
            parse_api_keys([f"{value}:{SECRET}"])
        assert SECRET not in str(refused.value)  # the id is named, the secret never


def test_endpoint_pattern_is_the_one_of_schemas_ids() -> None:
    from schemas import ids

    assert ENDPOINT_ID_PATTERN == ids.ENDPOINT_ID_PATTERN


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("a.", "dot"),
        ("a..b", "dot"),
        (".a", "dot"),
        ("a b", "' '"),
        ("a*", "'*'"),
        ("x" * 129, "129 characters"),
        ("", "empty"),
        ("-a", "start with a letter or digit"),
    ],
)
def test_a_refused_command_id_says_why(value: str, words: str) -> None:
    problem = command_id_problem(value)
    assert problem is not None
    assert words in problem


def test_the_nats_rules_themselves() -> None:
    """The checks the table relies on must be able to say no."""
    assert [is_kv_key(v) for v in ["a.b", "a/b=c", "a.", ".a", "a..b", "a b", "a*", ""]] == [
        True, True, False, False, False, False, False, False,
    ]  # fmt: skip
    assert [is_subject_token(v) for v in ["a-b", "a.b", "a*", ">", "a b", ""]] == [
        True, False, False, False, False, False,
    ]  # fmt: skip


def test_generated_command_ids_follow_the_rule() -> None:
    assert all(is_command_id(new_command_id()) for _ in range(100))


ANYTHING = st.text(
    alphabet=st.sampled_from(list("aZ09_-=./*> \té\x00")) | st.characters(), max_size=140
)


@seed(20261125)
@hypothesis_settings(max_examples=400, deadline=None, database=None)
@given(value=ANYTHING | st.from_regex(COMMAND_ID_PATTERN, fullmatch=True))
def test_every_accepted_command_id_is_a_valid_key_suffix(value: str) -> None:
    if is_command_id(value):
        assert is_kv_key(send_record_key("acme", value))
        assert len(value) <= 128
    else:
        assert command_id_problem(value) is not None


@seed(20261125)
@hypothesis_settings(max_examples=400, deadline=None, database=None)
@given(value=ANYTHING | st.from_regex(INSTANCE_ID_PATTERN, fullmatch=True))
def test_every_accepted_instance_id_is_a_subject_token_and_key(value: str) -> None:
    if is_instance_id(value):
        assert is_subject_token(value)
        assert is_kv_key(value)


@seed(20261125)
@hypothesis_settings(max_examples=400, deadline=None, database=None)
@given(value=ANYTHING | st.from_regex(API_KEY_ID_PATTERN, fullmatch=True))
def test_every_accepted_api_key_id_is_a_valid_key(value: str) -> None:
    if is_api_key_id(value):
        assert is_kv_key(value)
