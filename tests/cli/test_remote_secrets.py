"""``--cache-from/--cache-to type=reapi,...``: a mistake in the value is one usage error that
never quotes what may be a token (``token=...``, a header pasted in, ``user:password@``)."""

from __future__ import annotations

import pytest

from pybuild.cli._remote import _cache_spec, _connect
from pybuild.errors import UsageError


@pytest.mark.parametrize(
    "value",
    [
        "type=reapi,url=grpc://h:1,token=s3cretTOKEN",
        "type=reapi,url=grpc://h:1,authorization: Bearer s3cretTOKEN",
        "type=reapi,url=grpc://h:1,s3cretTOKEN",
        "type=reapi,url=grpc://h:1,header=authorization=Bearer s3cretTOKEN",
    ],
)
def test_a_bad_reapi_cache_value_never_shows_a_token(value: str) -> None:
    with pytest.raises(UsageError) as caught:
        _cache_spec(value, "--cache-to")
    assert "s3crettoken" not in caught.value.render().lower()
    assert caught.value.message.startswith("--cache-to type=reapi: ")


def test_a_password_in_a_reapi_cache_url_is_refused_without_showing_it() -> None:
    import argparse

    args = argparse.Namespace(
        remote_executor=None, remote_instance="", remote_header=[], remote_tls_ca=None, remote_tls_cert=None,
        remote_tls_key=None, cache_from=["type=reapi,url=grpc://me:s3cretTOKEN@h:1"], cache_to=[],
    )
    with pytest.raises(UsageError) as caught:
        _connect(args)
    assert "s3cretTOKEN" not in caught.value.render() and "--cache-from" in caught.value.message


def test_a_good_value_is_read() -> None:
    assert _cache_spec("type=reapi, url=grpc://h:1 ,instance=main", "--cache-from") == ("grpc://h:1", "main")
