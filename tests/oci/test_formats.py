"""Image documents against the OCI image-spec JSON schemas (draft-04).

The schema setup is checked first: all 70 upstream vectors give their
expected outcome when validated by the schema plus pybuild's parsers (which
add the Go validator's extra checks) plus the config Env rule.  Then what
pybuild writes is validated against the same schemas.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from pybuild.errors import ImageError
from pybuild.oci._archive import OCI_LAYOUT
from pybuild.oci._formats import (
    MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_LAYER_GZIP,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
    MEDIA_TYPE_OCI_MANIFEST,
    ContainerConfig,
    Descriptor,
    Healthcheck,
    HistoryEntry,
    ImageConfig,
    ImagePlatform,
    Index,
    Manifest,
    canonical_json,
    check_digest,
    digest_hex,
    parse_image_document,
    rfc3339,
    sha256_digest,
)

from .._peers import conformance_cases, require_conformance

SCHEMAS = "oci-image-spec-schema"  # in ../shared/conformance; a test needing it is skipped without it


@functools.cache
def vectors() -> dict[str, Any]:
    return json.loads((require_conformance(SCHEMAS) / "vectors" / "schema-test-vectors.json").read_text())


@functools.cache
def validators() -> dict[str, Draft4Validator]:
    aliases = vectors()["schema_url_aliases"]
    resources, schemas = [], {}
    for path in sorted(require_conformance(SCHEMAS).glob("*.json")):
        schema = json.loads(path.read_text())
        schemas[path.name] = schema
        resource = Resource.from_contents(schema, default_specification=DRAFT4)
        resources += [(path.name, resource)] + [(url, resource) for url in aliases.get(path.name, [])]
    registry = Registry().with_resources(resources)
    return {name: Draft4Validator(schema, registry=registry) for name, schema in schemas.items()}


def schema_valid(schema: str, document: Any) -> bool:
    try:
        validators()[schema].validate(document)
    except ValidationError:
        return False
    return True


def parser_accepts(suite: str, text: str) -> bool:
    """pybuild's parsers: they add the Go validator's digest, base64 and URL checks."""
    try:
        if suite == "descriptor":
            Descriptor.from_dict(json.loads(text), "descriptor")
        elif suite == "manifest":
            Manifest.from_json(text.encode())
        elif suite == "imageindex":
            Index.from_json(text.encode())
        elif suite == "config":
            ImageConfig.from_json(text.encode())
    except (ImageError, ValueError):
        return False
    return True


def env_valid(document: Any) -> bool:
    env = (document.get("config") or {}).get("Env") or [] if isinstance(document, dict) else []
    return all(isinstance(e, str) and "=" in e and not e.startswith("=") for e in env)


def all_cases():
    for suite, content in vectors()["suites"].items():
        for number, case in enumerate(content["cases"]):
            yield pytest.param(suite, number, id=f"{suite}-{number}")


def test_there_are_70_vectors() -> None:
    assert sum(len(s["cases"]) for s in vectors()["suites"].values()) == 70


@pytest.mark.parametrize(("suite", "number"), conformance_cases(SCHEMAS, lambda _: list(all_cases()), width=2))
def test_vector(suite: str, number: int) -> None:
    content = vectors()["suites"][suite]
    case = content["cases"][number]
    text = case["document"]
    for old, new in (content.get("compat_map") or {}).items():
        text = text.replace(old, new)
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    valid = document is not None and schema_valid(content["schema"], document)
    if suite == "config":
        valid = valid and env_valid(document)
    if valid and not suite.startswith("backwards"):
        valid = parser_accepts(suite, text)
    assert valid is not case["fail"], case["comment"]


@pytest.mark.parametrize(
    ("suite", "parse"),
    [
        ("backwards_compatibility-TestBackwardsCompatibilityManifest", Manifest.from_json),
        ("backwards_compatibility-TestBackwardsCompatibilityImageIndex", Index.from_json),
        ("backwards_compatibility-TestBackwardsCompatibilityConfig", ImageConfig.from_json),
    ],
)
def test_real_docker_documents_parse_and_digest(suite: str, parse) -> None:
    case = vectors()["suites"][suite]["cases"][0]
    original = case["document"].encode()
    assert sha256_digest(original) == case["sha256_digest_of_document"]
    value = parse(original)  # the unconverted Docker v2.2 text
    if isinstance(value, Manifest):
        assert value.media_type == MEDIA_TYPE_DOCKER_MANIFEST
        assert value.config.media_type == json.loads(original)["config"]["mediaType"]
        assert all(layer.media_type == MEDIA_TYPE_DOCKER_LAYER_GZIP for layer in value.layers)
    elif isinstance(value, Index):
        assert value.media_type == MEDIA_TYPE_DOCKER_MANIFEST_LIST
        assert all(m.platform is not None for m in value.manifests)
    else:
        assert value.diff_ids and value.history


def valid_oci_cases():
    for param in all_cases():
        suite, number = param.values
        if suite in ("manifest", "imageindex", "config", "descriptor"):
            if not vectors()["suites"][suite]["cases"][number]["fail"]:
                yield param


@pytest.mark.parametrize(("suite", "number"), conformance_cases(SCHEMAS, lambda _: list(valid_oci_cases()), width=2))
def test_passing_vectors_survive_a_round_trip(suite: str, number: int) -> None:
    content = vectors()["suites"][suite]
    text = content["cases"][number]["document"]
    if suite == "descriptor":
        value = Descriptor.from_dict(json.loads(text), "descriptor")
        again = Descriptor.from_dict(json.loads(canonical_json(value.to_dict())), "descriptor")
        written = value.to_dict()
    else:
        cls = {"manifest": Manifest, "imageindex": Index, "config": ImageConfig}[suite]
        value = cls.from_json(text.encode())
        again = cls.from_json(value.to_json())
        written = json.loads(value.to_json())
    assert again == value
    assert schema_valid(content["schema"], written)


def sample_config() -> ImageConfig:
    return ImageConfig(
        architecture="amd64",
        os="linux",
        diff_ids=("sha256:" + "a" * 64, "sha256:" + "b" * 64),
        config=ContainerConfig(
            user="app:app",
            exposed_ports=("8080/tcp", "53/udp"),
            env=("PATH=/usr/bin:/bin", "LANG=C.UTF-8"),
            entrypoint=("/bin/sh", "-c"),
            cmd=("echo hi",),
            volumes=("/data",),
            working_dir="/srv",
            labels={"org.opencontainers.image.title": "demo", "b": "2"},
            stop_signal="SIGTERM",
            args_escaped=True,
            healthcheck=Healthcheck(("CMD", "true"), interval=30 * 10**9, timeout=5 * 10**9, retries=3),
            on_build=("RUN echo child",),
            shell=("/bin/sh", "-c"),
        ),
        history=(
            HistoryEntry(created="2024-01-01T00:00:00Z", created_by="ADD rootfs.tar /", comment="buildkit.dockerfile.v0"),
            HistoryEntry(created="2024-01-01T00:00:00Z", created_by="ENV LANG=C.UTF-8", empty_layer=True),
        ),
        created="2024-01-01T00:00:00Z",
        author="pybuild",
    )


def test_written_config_is_valid_and_uses_dockers_key_names() -> None:
    config = sample_config()
    document = json.loads(config.to_json())
    assert schema_valid("config-schema.json", document)
    keys = set(document["config"])
    assert keys == {
        "User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
        "StopSignal", "ArgsEscaped", "Healthcheck", "OnBuild", "Shell",
    }  # fmt: skip
    assert document["config"]["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 30 * 10**9, "Timeout": 5 * 10**9, "Retries": 3}
    assert document["config"]["ExposedPorts"] == {"53/udp": {}, "8080/tcp": {}}
    assert document["rootfs"] == {"type": "layers", "diff_ids": list(config.diff_ids)}
    assert document["history"][1] == {"created": "2024-01-01T00:00:00Z", "created_by": "ENV LANG=C.UTF-8", "empty_layer": True}
    assert ImageConfig.from_json(config.to_json()) == config


def test_minimal_config_omits_empty_fields() -> None:
    document = json.loads(ImageConfig("arm64", "linux", variant="v8").to_json())
    assert document == {"architecture": "arm64", "os": "linux", "variant": "v8", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}
    assert schema_valid("config-schema.json", document)


def test_written_manifest_index_descriptor_and_layout_are_valid() -> None:
    config = sample_config()
    layer = Descriptor(MEDIA_TYPE_OCI_LAYER_GZIP, "sha256:" + "c" * 64, 1234)
    zstd_layer = Descriptor(MEDIA_TYPE_OCI_LAYER_ZSTD, "sha256:" + "d" * 64, 99, annotations={"k": "v"})
    manifest = Manifest(config.descriptor(), (layer, zstd_layer), annotations={"org.opencontainers.image.created": "2024"})
    assert schema_valid("image-manifest-schema.json", json.loads(manifest.to_json()))
    platform = ImagePlatform("arm", "linux", variant="v7")
    index = Index((manifest.descriptor(platform=platform),), annotations={"x": "y"})
    document = json.loads(index.to_json())
    assert schema_valid("image-index-schema.json", document)
    assert document["manifests"][0]["platform"] == {"architecture": "arm", "os": "linux", "variant": "v7"}
    assert schema_valid("content-descriptor.json", layer.to_dict())
    assert schema_valid("image-layout-schema.json", json.loads(OCI_LAYOUT))
    docker = Manifest(config.descriptor(MEDIA_TYPE_DOCKER_CONFIG), (layer,), media_type=MEDIA_TYPE_DOCKER_MANIFEST)
    assert json.loads(docker.to_json())["mediaType"] == MEDIA_TYPE_DOCKER_MANIFEST
    assert parse_image_document(docker.to_json()) == docker
    assert parse_image_document(index.to_json()) == index


def test_encoding_is_canonical_and_digests_follow() -> None:
    a = sample_config()
    b = ImageConfig(**{**a.__dict__, "config": ContainerConfig(**{**a.config.__dict__, "labels": {"b": "2", "org.opencontainers.image.title": "demo"}})})
    assert a == b and a.to_json() == b.to_json()
    text = a.to_json()
    assert b"\n" not in text and b'": ' not in text and b'", "' not in text
    keys = list(json.loads(text))
    assert keys == sorted(keys)
    assert a.descriptor().digest == sha256_digest(text)
    assert canonical_json({"é": "ü"}) == '{"é":"ü"}'.encode()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"schemaVersion": 1, "fsLayers": []}', "schema 1"),
        (b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}', "unexpected mediaType"),
        (b'{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:00", "size": 1}, "layers": []}', "not a valid sha256"),
        (b'{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:' + b"0" * 64 + b'", "size": -1}, "layers": []}', "size"),
        (b'{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:' + b"0" * 64 + b'", "size": true}, "layers": []}', "size"),
        (b'{"schemaVersion": 2, "layers": []}', "config"),
    ],
)
def test_bad_manifests_are_image_errors(data: bytes, match: str) -> None:
    with pytest.raises(ImageError, match=match) as info:
        Manifest.from_json(data)
    assert info.value.hint


def test_media_type_must_agree_with_how_it_was_served() -> None:
    manifest = Manifest(Descriptor(MEDIA_TYPE_OCI_CONFIG, "sha256:" + "0" * 64, 2), ())
    with pytest.raises(ImageError, match="served as"):
        Manifest.from_json(manifest.to_json(), MEDIA_TYPE_DOCKER_MANIFEST)
    # An OCI manifest without mediaType takes the one it was served with.
    bare = json.loads(manifest.to_json())
    del bare["mediaType"]
    assert Manifest.from_dict(bare, MEDIA_TYPE_OCI_MANIFEST).media_type == MEDIA_TYPE_OCI_MANIFEST
    assert isinstance(parse_image_document(b'{"schemaVersion":2,"manifests":[]}'), Index)
    assert parse_image_document(b'{"schemaVersion":2,"manifests":[]}').media_type == MEDIA_TYPE_OCI_INDEX


@pytest.mark.parametrize(
    ("document", "match"),
    [
        ({"os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}, "architecture"),
        ({"architecture": "amd64", "os": "linux"}, "rootfs"),
        ({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ["nope"]}}, "not a digest"),
        ({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "config": {"Env": "A=1"}}, "Env"),
        ({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "history": [1]}, "history"),
    ],
)
def test_bad_configs_are_image_errors(document: dict, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        ImageConfig.from_json(json.dumps(document).encode())


def test_unknown_fields_are_dropped() -> None:
    docker = {
        "architecture": "amd64",
        "os": "linux",
        "container": "abc",
        "docker_version": "20.10",
        "container_config": {"Hostname": "x"},
        "config": {"Hostname": "", "Image": "sha256:x", "Cmd": ["sh"], "AttachStdin": False},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    config = ImageConfig.from_json(json.dumps(docker).encode())
    assert config.config == ContainerConfig(cmd=("sh",))


def test_digest_helpers() -> None:
    good = "sha256:" + "ab" * 32
    assert check_digest(good) == good
    assert digest_hex(good) == "ab" * 32
    for bad in ("sha256:" + "AB" * 32, "sha256:abc", "md5", "", None, 7):
        with pytest.raises(ImageError):
            check_digest(bad)
    assert check_digest("sha512:" + "0" * 128)
    with pytest.raises(ImageError, match="unsupported digest algorithm"):
        digest_hex("sha512:" + "0" * 128)
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1_700_000_000) == "2023-11-14T22:13:20Z"


def test_values_are_hashable_and_frozen() -> None:
    config = sample_config()
    assert hash(config) == hash(ImageConfig.from_json(config.to_json()))
    with pytest.raises(AttributeError):
        config.os = "windows"  # type: ignore[misc]
    assert Descriptor("a/b", "sha256:" + "0" * 64, 1, annotations={"k": "v"}).annotation("k") == "v"
