"""COPY and ADD paths of the classic builder (moby builder/dockerfile/copy.go): the wording of a missing
source per kind of source, ADD of an archive straight into the step's tree, and a big COPY whose layer
is exactly the context's files."""

import hashlib
import io
import os
import tarfile

import pytest
from golden.harness import BuildBench

from minibuild.builder.dockerfile.copy import Copier, CopyError, err_on_source_download
from minibuild.builder.remotecontext import Source

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (or user namespaces) here"),
]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return BuildBench(tmp_path_factory.mktemp("root"))


def test_a_missing_source_blames_the_context_only_for_the_context(tmp_path):
    """copy.go's calcCopyInfo: "file not found in build context or excluded by .dockerignore" wraps the
    stat error only when the source is the context; from an image or a stage it is the bare error."""
    context = Copier(Source(tmp_path), {}, err_on_source_download)
    image = Copier(Source(tmp_path), {}, err_on_source_download, image_id="sha256:" + "a" * 64)
    with pytest.raises(CopyError) as err:
        context.create_copy_instruction(["/nope"], "/", "COPY")
    assert str(err.value) == (
        "COPY failed: file not found in build context or excluded by .dockerignore: "
        "stat nope: file does not exist"
    )
    with pytest.raises(CopyError) as err:
        image.create_copy_instruction(["/nope"], "/", "COPY")
    assert str(err.value) == "COPY failed: stat nope: file does not exist"


def test_copy_from_a_stage_of_a_missing_path(bench):
    built = bench.build("FROM busybox:local AS a\nFROM busybox:local\nCOPY --from=a /nope /\n")
    assert str(built.error) == "COPY failed: stat nope: file does not exist"
    built = bench.build("FROM busybox:local\nCOPY --from=busybox:local /nope/x /x\n")
    assert str(built.error) == "COPY failed: stat nope/x: file does not exist"


def _archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("lnk/x", b"through the link\n"), ("top", b"top\n")):
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.mode = len(data), 7, 0o640
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_add_untars_into_the_tree_following_its_symlinks_inside_it(bench):
    """dockerd untars chrooted in the destination: a symlink already there is followed, within it."""
    dockerfile = "FROM busybox:local\nRUN mkdir -p /real && ln -s /real /lnk\nADD a.tar.gz /\n"
    image_id = bench.build(dockerfile, {"a.tar.gz": _archive()}).ok()
    tree = bench.tree(image_id, bench.data_root / "tree-add")
    assert (tree / "lnk").is_symlink() and (tree / "real/x").read_bytes() == b"through the link\n"
    st = os.stat(tree / "top")
    assert (st.st_uid, st.st_mode & 0o777) == (7, 0o640)


def test_a_big_copy_is_the_context_byte_for_byte(bench):
    """The fast paths (hashes while unpacking, kernel copies, diff written into the store and hashed
    on the way) give the layer a plain tar of the files would give."""
    files = {f"d/f{i}": os.urandom(3 << 20) if i % 2 else b"text\n" * 200_000 for i in range(4)}
    built = bench.build("FROM scratch\nCOPY . /ctx/\n", files)
    image = bench.service.get_image(built.ok())
    (layer,) = bench.service.layer_store.chain(image.chain_id)
    with layer.open() as f:
        assert "sha256:" + hashlib.file_digest(f, "sha256").hexdigest() == layer.diff_id
    with tarfile.open(layer.tar_path) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    dockerfile = b"FROM scratch\nCOPY . /ctx/\n"
    assert got == {"ctx/Dockerfile": dockerfile, **{f"ctx/{name}": data for name, data in files.items()}}
    assert layer.size == len(dockerfile) + sum(len(data) for data in files.values())
    again = bench.build("FROM scratch\nCOPY . /ctx/\n", files)
    assert again.ok() == built.image_id  # the same hashes: a cache hit
