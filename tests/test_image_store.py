"""Image configs, the image store and the reference store: formats, lookups, crash safety."""

import hashlib
import io
import os
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibuild import errdefs
from minibuild.image import store as store_module
from minibuild.image.image import (
    GO_ZERO_TIME,
    Image,
    InvalidImageConfig,
    empty_container_config,
    format_time,
    image_id_of,
    marshal_image_config,
    parse_time,
)
from minibuild.image.reference import parse_normalized_named
from minibuild.image.refstore import ReferenceStore
from minibuild.image.store import ImageStore
from minibuild.layer import LayerStore

ZERO_CONFIG = (
    '{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,'
    '"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":null,'
    '"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null}'
)


def make_tar(**files: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def config_for(diff_ids: list[str], **extra) -> bytes:
    doc = {"rootfs": {"type": "layers", "diff_ids": diff_ids}, "created": format_time(0), "os": "linux"}
    doc.update(extra)
    return marshal_image_config(doc)


@pytest.fixture
def stores(tmp_path):
    layers = LayerStore(tmp_path / "layerdb")
    return layers, ImageStore(tmp_path / "imagedb", layers)


def register(layers: LayerStore, data: bytes, parent=None):
    return layers.register(io.BytesIO(data), parent)


# --- the config format -----------------------------------------------------------------------------


def test_import_config_bytes_are_dockers():
    config = {
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]},
        "os": "linux",
        "architecture": "amd64",
        "docker_version": "20.10.24+dfsg1",
        "created": "2024-01-02T03:04:05.5Z",
        "comment": "Imported from -",
        "config": empty_container_config(),
        "history": [{"created": "2024-01-02T03:04:05.5Z", "comment": "Imported from -"}],
    }
    expected = (
        '{"architecture":"amd64","comment":"Imported from -","config":' + ZERO_CONFIG + ","
        '"container_config":' + ZERO_CONFIG + ',"created":"2024-01-02T03:04:05.5Z",'
        '"docker_version":"20.10.24+dfsg1","history":[{"created":"2024-01-02T03:04:05.5Z",'
        '"comment":"Imported from -"}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:'
        + "a" * 64
        + '"]}}'
    )
    assert marshal_image_config(config).decode() == expected


def test_nested_fields_in_go_order_and_maps_sorted():
    config = {
        "rootfs": {"diff_ids": [], "type": "layers"},
        "config": {
            "Labels": {"z": "1", "a": "<&>"},
            "Cmd": ["sh"],
            "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
            "Healthcheck": {"Retries": 3, "Test": ["CMD", "true"]},
            "StopSignal": "",
        },
        "history": [{"empty_layer": True, "created_by": "/bin/sh -c #(nop)  CMD", "created": GO_ZERO_TIME}],
    }
    text = marshal_image_config(config).decode()
    assert '"ExposedPorts":{"443/tcp":{},"80/tcp":{}},"Tty"' in text
    assert '"Cmd":["sh"],"Healthcheck":{"Test":["CMD","true"],"Retries":3},"Image"' in text
    assert '"Labels":{"a":"\\u003c\\u0026\\u003e","z":"1"}}' in text  # Go escapes <, &, >
    assert "StopSignal" not in text  # omitempty
    assert '"history":[{"created":"0001-01-01T00:00:00Z","created_by":"/bin/sh -c #(nop)  CMD",' in text
    assert text.endswith('"empty_layer":true}],"rootfs":{"type":"layers"}}')


@pytest.mark.parametrize(
    "bad",
    [{"config": {}}, {"rootfs": {}, "bogus": 1}, {"rootfs": {}, "config": {"Nope": 1}},
     {"rootfs": {}, "history": [{"created": GO_ZERO_TIME, "x": 1}]}],
)  # fmt: skip
def test_invalid_configs(bad):
    with pytest.raises(InvalidImageConfig):
        marshal_image_config(bad)


def test_go_time_format():
    assert format_time(0) == "1970-01-01T00:00:00Z"
    assert format_time(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"
    assert parse_time("2023-11-14T23:13:20.12+01:00") == 1_700_000_000_120_000_000
    assert parse_time(GO_ZERO_TIME) == -62_135_596_800 * 1_000_000_000


@settings(deadline=None)  # a loaded machine must not fail it
@given(st.integers(min_value=-(10**18), max_value=4 * 10**18))
def test_time_round_trip(ns):
    assert parse_time(format_time(ns)) == ns


def test_image_from_json():
    raw = config_for([])
    image = Image.from_json(raw)
    assert image.id == "sha256:" + hashlib.sha256(raw).hexdigest() == image_id_of(raw)
    assert image.chain_id is None and image.diff_ids == []
    bad_time = b'{"rootfs":{"type":"layers"},"created":"yesterday"}'
    bad_history = b'{"rootfs":{"type":"layers"},"history":[{"created":5}]}'
    for bad in (b"not json", b"[]", b"{}", bad_time, bad_history, b'{"rootfs":{},"history":"x"}'):
        with pytest.raises(InvalidImageConfig):
            Image.from_json(bad)


# --- the image store -------------------------------------------------------------------------------


def test_create_get_and_layer_references(stores):
    layers, images = stores
    layer = register(layers, make_tar(a=b"1"))
    raw = config_for([layer.diff_id])
    image_id = images.create(raw)
    layers.release(layer.chain_id)  # the image holds its own reference now
    assert image_id == image_id_of(raw)
    assert images.get(image_id).raw == raw
    assert (images.root / "content/sha256" / image_id[7:]).read_bytes() == raw
    assert images.create(raw) == image_id  # existing: same ID, no second reference
    assert layers.references(layer.chain_id) == 1
    assert images.delete(image_id) == [layer]
    assert layer.chain_id not in layers
    with pytest.raises(errdefs.NotFound, match="No such image"):
        images.get(image_id)


def test_shared_layers_stay_until_the_last_image(stores):
    layers, images = stores
    base = register(layers, make_tar(a=b"1"))
    top = register(layers, make_tar(b=b"2"), base.chain_id)
    one = images.create(config_for([base.diff_id]))
    two = images.create(config_for([base.diff_id, top.diff_id]), parent=one)
    layers.release(base.chain_id)
    layers.release(top.chain_id)
    assert images.children(one) == [two] and images.get_parent(two) == one
    assert set(images.heads()) == {two}
    assert images.delete(one) == []  # the base layer is still below `two`
    assert images.delete(two) == [top, base]


def test_create_refuses_bad_configs(stores):
    _, images = stores
    with pytest.raises(errdefs.InvalidParameter, match="failed to get layer sha256:"):
        images.create(config_for(["sha256:" + "0" * 64]))
    with pytest.raises(errdefs.InvalidParameter, match="invalid image JSON, no RootFS key"):
        images.create(b'{"os":"linux"}')
    with pytest.raises(errdefs.InvalidParameter, match="too many non-empty layers in History section"):
        images.create(config_for([], history=[{"created": GO_ZERO_TIME}]))
    with pytest.raises(errdefs.NotFound):
        images.create(config_for([]), parent="sha256:" + "1" * 64)
    assert len(images) == 0 and os.listdir(images.root / "metadata/sha256") == []


def test_search_by_short_id(stores):
    _, images = stores
    ids = [images.create(config_for([], comment=str(n))) for n in range(40)]
    target = ids[0]
    assert images.search(target) == target
    assert images.search(target[7:]) == target
    # a prefix long enough to be unique, with and without the algorithm
    unique = next(n for n in range(1, 65) if sum(i[7:].startswith(target[7 : 7 + n]) for i in ids) == 1)
    assert images.search(target[7 : 7 + unique]) == target
    assert images.search("sha256:" + target[7 : 7 + unique]) == target
    shared = next(i for i in ids[1:] if i[7] == target[7])  # 40 IDs over 16 first digits: one repeats
    assert shared
    with pytest.raises(errdefs.NotFound, match="ambiguous"):
        images.search(target[7])
    with pytest.raises(errdefs.NotFound, match="No such image: nope"):
        images.search("nope")
    with pytest.raises(errdefs.NotFound):
        images.search("sha512:" + target[7:15])


def test_last_updated(stores):
    _, images = stores
    image_id = images.create(config_for([]))
    assert images.get_last_updated(image_id) is None
    images.set_last_updated(image_id, 1_700_000_000_000_000_001)
    assert images.get_last_updated(image_id) == "2023-11-14T22:13:20.000000001Z"


def test_reopen_restores_images_and_layer_references(tmp_path):
    layers = LayerStore(tmp_path / "layerdb")
    images = ImageStore(tmp_path / "imagedb", layers)
    layer = register(layers, make_tar(a=b"1"))
    one = images.create(config_for([layer.diff_id], comment="1"))
    two = images.create(config_for([layer.diff_id], comment="2"), parent=one)
    layers2 = LayerStore(tmp_path / "layerdb")
    images2 = ImageStore(tmp_path / "imagedb", layers2)
    assert set(images2.images()) == {one, two}
    assert images2.children(one) == [two]
    assert layers2.references(layer.chain_id) == 2
    assert layers2.sweep_unreferenced() == []


def test_crash_while_writing_the_config(tmp_path, monkeypatch):
    """Killed after the parent link and layers, before the config: no image, no leftovers."""
    layers = LayerStore(tmp_path / "layerdb")
    images = ImageStore(tmp_path / "imagedb", layers)
    base = images.create(config_for([]))
    layer = register(layers, make_tar(a=b"1"))
    real = store_module.atomic_write_file

    def crash(path, data, mode=0o644):
        if "content" in str(path):
            (path.parent / ".tmp-half-written").write_bytes(data[:10])
            raise KeyboardInterrupt("killed")
        return real(path, data, mode)

    monkeypatch.setattr(store_module, "atomic_write_file", crash)
    with pytest.raises(KeyboardInterrupt):
        images.create(config_for([layer.diff_id]), parent=base)
    monkeypatch.undo()
    (images.root / "metadata/sha256" / ("e" * 64)).mkdir()  # as if even the cleanup never ran
    layers2 = LayerStore(tmp_path / "layerdb")
    images2 = ImageStore(tmp_path / "imagedb", layers2)
    assert set(images2.images()) == {base}
    assert sorted(os.listdir(images2.root / "content/sha256")) == [base[7:]]
    assert os.listdir(images2.root / "metadata/sha256") == []
    assert [swept.chain_id for swept in layers2.sweep_unreferenced()] == [layer.chain_id]
    assert layers2.layers() == []


def test_damaged_content_and_lost_layers_are_dropped_on_open(tmp_path):
    layers = LayerStore(tmp_path / "layerdb")
    images = ImageStore(tmp_path / "imagedb", layers)
    layer = register(layers, make_tar(a=b"1"))
    good = images.create(config_for([]))
    lost = images.create(config_for([layer.diff_id]))
    corrupt = images.create(config_for([], comment="x"))
    path = images.root / "content/sha256" / corrupt[7:]
    path.write_bytes(path.read_bytes().replace(b'"x"', b'"y"'))
    os.unlink(layer.tar_path)  # the layer store drops it on open, so `lost` is a half image
    layers2 = LayerStore(tmp_path / "layerdb")
    images2 = ImageStore(tmp_path / "imagedb", layers2)
    assert set(images2.images()) == {good}
    assert lost not in images2


# --- references ------------------------------------------------------------------------------------


def ref(text):
    return parse_normalized_named(text)


def test_reference_store_file_format_and_lookups(tmp_path):
    refs = ReferenceStore(tmp_path / "repositories.json")
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    refs.add_tag(ref("busybox"), a)
    refs.add_tag(ref("busybox:1.36"), a)
    refs.add_tag(ref("localhost:5000/x/y:v"), b)
    refs.add_digest(ref("busybox@sha256:" + "c" * 64), a)
    assert (tmp_path / "repositories.json").read_text() == (
        '{"Repositories":{"busybox":{"busybox:1.36":"' + a + '","busybox:latest":"' + a + '","busybox@sha256:'
        + "c" * 64 + '":"' + a + '"},"localhost:5000/x/y":{"localhost:5000/x/y:v":"' + b + '"}}}'
    )  # fmt: skip
    assert refs.get(ref("busybox")) == a
    assert [str(r) for r in refs.references(a)] == [
        "docker.io/library/busybox:1.36",
        "docker.io/library/busybox:latest",
        "docker.io/library/busybox@sha256:" + "c" * 64,
    ]
    reloaded = ReferenceStore(tmp_path / "repositories.json")
    assert reloaded.all() == refs.all()
    refs.delete(ref("busybox:1.36"))
    with pytest.raises(errdefs.NotFound, match="reference does not exist"):
        refs.get(ref("busybox:1.36"))
    with pytest.raises(errdefs.NotFound, match="reference does not exist"):
        refs.delete(ref("busybox:1.36"))


def test_reference_store_rules(tmp_path):
    refs = ReferenceStore(tmp_path / "repositories.json")
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    refs.add_tag(ref("app:v1"), a)
    with pytest.raises(errdefs.Conflict) as err:
        refs.add_tag(ref("app:v1"), b)
    assert err.value.message == (
        f"Conflict: Tag app:v1 is already set to image {a}, "
        "if you want to replace it, please use the force option"
    )
    refs.add_tag(ref("app:v1"), b, force=True)
    assert refs.get(ref("app:v1")) == b
    with pytest.raises(errdefs.InvalidParameter, match="refusing to create a tag with a digest reference"):
        refs.add_tag(ref("app@sha256:" + "c" * 64), a)
    with pytest.raises(errdefs.InvalidParameter, match="ambiguous tag using digest algorithm as name"):
        refs.add_tag(ref("sha256:abc"), a)
    assert [str(r) for r in refs.prune(lambda image_id: image_id != b)] == ["docker.io/library/app:v1"]
    assert refs.all() == []
