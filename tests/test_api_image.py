"""Image endpoints over a real socket: statuses, headers and messages as dockerd's (reference §7)."""

import io
import json
import tarfile
import urllib.parse

import pytest
from api_doubles import raw_chunks, raw_request, tar_of

from minibuild.api.daemon import embedded_daemon

ROOTFS = tar_of({"bin/x": b"hello", "etc/passwd": b"root:x:0:0::/root:/bin/sh\n"})


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with embedded_daemon(tmp_path_factory.mktemp("root")) as d:
        yield d


def call(daemon, method, url, body=None):
    return raw_request(daemon.socket_path, method, url, body)


def message(body: bytes) -> str:
    return json.loads(body)["message"]


def import_image(daemon, repo: str, extra: str = "") -> str:
    status, headers, body = call(daemon, "POST", f"/images/create?fromSrc=-&repo={repo}{extra}", ROOTFS)
    assert status == 200 and headers["Content-Type"] == "application/json", body
    (line,) = body.split(b"\r\n")[:-1]
    return json.loads(line)["status"]


@pytest.fixture(scope="module")
def image(daemon):
    changes = urllib.parse.quote('CMD ["sh"]')
    return import_image(daemon, "mbref-img:v1", f"&message=imported&changes={changes}")


def test_import_answers_one_status_message(daemon, image):
    assert image.startswith("sha256:") and len(image) == 71
    chunks = raw_chunks(daemon.socket_path, "POST", "/images/create?fromSrc=-&repo=mbref-other", ROOTFS)
    assert len(chunks) == 1 and json.loads(chunks[0])["status"].startswith("sha256:")


@pytest.mark.parametrize(
    ("query", "body", "status", "text"),
    [
        ("fromSrc=-&repo=BAD", ROOTFS, 400, "invalid reference format: repository name must be lowercase"),
        ("fromSrc=-&changes=RUN%20echo%20x", ROOTFS, 400, "run is not a valid change command"),
        ("fromSrc=-&platform=bogus", ROOTFS, 400, '"bogus": unknown operating system or architecture: '
         "invalid argument"),
        ("fromSrc=-&platform=windows/amd64", ROOTFS, 400, "operating system is not supported"),
        ("fromSrc=-&platform=darwin", ROOTFS, 400, "operating system is not supported"),
        ("fromSrc=-", b"not a tar at all", 500, "ApplyLayer exit status 1 stdout:  stderr: unexpected EOF"),
        ("", ROOTFS, 500, 'Get "http:": http: no Host in request URL'),
    ],
)  # fmt: skip
def test_import_errors(daemon, query, body, status, text):
    got = call(daemon, "POST", "/images/create?" + query, body)
    assert (got[0], message(got[2])) == (status, text)


@pytest.mark.parametrize("platform", ["linux/arm64", "LINUX/amd64", "linux"])
def test_import_takes_any_linux_platform(daemon, platform):
    got = call(daemon, "POST", f"/images/create?fromSrc=-&platform={platform}", ROOTFS)
    assert got[0] == 200 and json.loads(got[2])["status"].startswith("sha256:")


def test_import_result_config(daemon, image):
    doc = json.loads(call(daemon, "GET", f"/images/{image}/json")[2])
    assert (doc["Comment"], doc["Parent"], doc["Config"]["Cmd"]) == ("imported", "", ["sh"])


def test_list(daemon, image):
    status, headers, body = call(daemon, "GET", "/images/json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    images = json.loads(body)
    entry = next(i for i in images if i["Id"] == image)
    assert list(entry) == sorted(entry)  # keys alphabetical, as dockerd writes ImageSummary
    assert entry["RepoTags"] == ["mbref-img:v1"] and entry["Labels"] is None and entry["Containers"] == -1
    assert body.endswith(b"]\n")


def test_list_filters(daemon, image):
    flt = urllib.parse.quote(json.dumps({"reference": ["mbref-img"]}))
    images = json.loads(call(daemon, "GET", f"/images/json?filters={flt}")[2])
    assert [i["Id"] for i in images] == [image]
    images = json.loads(call(daemon, "GET", "/images/json?filter=mbref-img")[2])  # the deprecated form
    assert [i["Id"] for i in images] == [image]
    got = call(daemon, "GET", "/images/json?filters=" + urllib.parse.quote('{"bogus":["x"]}'))
    assert (got[0], message(got[2])) == (400, "Invalid filter 'bogus'")
    got = call(daemon, "GET", "/images/json?filters=notjson")
    assert (got[0], message(got[2])) == (500, "invalid character 'o' in literal null (expecting 'u')")


@pytest.mark.parametrize("name", ["mbref-img:v1", "IMAGE", "IMAGE12", "sha256:IMAGE12", "IMAGE4"])
def test_inspect_by_any_name(daemon, image, name):
    hexid = image[7:]
    name = name.replace("IMAGE12", hexid[:12]).replace("IMAGE4", hexid[:4]).replace("IMAGE", image)
    status, _, body = call(daemon, "GET", f"/images/{name}/json")
    assert status == 200
    doc = json.loads(body)
    assert list(doc)[:6] == ["Id", "RepoTags", "RepoDigests", "Parent", "Comment", "Created"]
    assert doc["Id"] == image


def test_inspect_and_history_errors(daemon):
    got = call(daemon, "GET", "/images/BUSYBOX:local/json")
    assert (got[0], message(got[2])) == (
        400,
        "no such image: BUSYBOX:local: invalid reference format: repository name must be lowercase",
    )
    got = call(daemon, "GET", "/images/nope/json")
    assert (got[0], message(got[2])) == (404, "no such image: nope: No such image: nope:latest")
    got = call(daemon, "GET", "/images/nope/history")
    assert (got[0], message(got[2])) == (404, "No such image: nope:latest")


def test_history(daemon, image):
    status, _, body = call(daemon, "GET", "/images/mbref-img:v1/history")
    assert status == 200
    (entry,) = json.loads(body)
    assert list(entry) == ["Comment", "Created", "CreatedBy", "Id", "Size", "Tags"]
    assert (entry["Id"], entry["Tags"], entry["Comment"]) == (image, ["mbref-img:v1"], "imported")


def test_tag(daemon, image):
    status, headers, body = call(daemon, "POST", "/images/mbref-img:v1/tag?repo=mbref-img2&tag=x")
    assert (status, body, headers["Content-Length"]) == (201, b"", "0")
    assert "Content-Type" not in headers
    doc = json.loads(call(daemon, "GET", "/images/mbref-img2:x/json")[2])
    assert doc["Id"] == image


@pytest.mark.parametrize(
    ("url", "status", "text"),
    [
        ("/images/mbref-img:v1/tag?repo=BAD", 500, "invalid reference format: repository name must be "
         "lowercase"),
        ("/images/mbref-img:v1/tag?repo=x&tag=BAD!", 500, "invalid tag format"),
        ("/images/mbref-img:v1/tag", 500, "invalid reference format"),
        ("/images/nope-mbref/tag?repo=x", 404, "No such image: nope-mbref:latest"),
    ],
)  # fmt: skip
def test_tag_errors(daemon, image, url, status, text):
    got = call(daemon, "POST", url)
    assert (got[0], message(got[2])) == (status, text)


def test_remove(daemon):
    image = import_image(daemon, "mbref-rm:a")
    call(daemon, "POST", "/images/mbref-rm:a/tag?repo=mbref-rm&tag=b")
    status, _, body = call(daemon, "DELETE", "/images/mbref-rm:b")
    assert (status, json.loads(body)) == (200, [{"Untagged": "mbref-rm:b"}])
    call(daemon, "POST", "/images/mbref-rm:a/tag?repo=mbref-rm&tag=c")
    got = call(daemon, "DELETE", f"/images/{image[7:19]}")
    assert (got[0], message(got[2])) == (
        409,
        f"conflict: unable to delete {image[7:19]} (must be forced) - "
        "image is referenced in multiple repositories",
    )
    status, _, body = call(daemon, "DELETE", f"/images/{image[7:19]}?force=1")
    records = json.loads(body)
    assert status == 200 and {"Deleted": image} in records and {"Untagged": "mbref-rm:a"} in records
    got = call(daemon, "DELETE", "/images/nope")
    assert (got[0], message(got[2])) == (404, "No such image: nope:latest")


def test_save_and_load_round_trip(daemon, image):
    status, headers, archive = call(daemon, "GET", "/images/mbref-img:v1/get")
    assert status == 200 and headers["Content-Type"] == "application/x-tar"
    assert headers["Transfer-Encoding"] == "chunked"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert manifest[0]["RepoTags"] == ["mbref-img:v1"] and manifest[0]["Config"] == image[7:] + ".json"
    status, _, both = call(daemon, "GET", "/images/get?names=mbref-img:v1&names=" + image)
    assert status == 200 and len(both) > 0
    status, headers, body = call(daemon, "POST", "/images/load", archive)
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert body == b'{"stream":"Loaded image: mbref-img:v1\\n"}\r\n'


def test_save_missing_is_an_http_error(daemon):
    got = call(daemon, "GET", "/images/get?names=nope-mbref")
    assert (got[0], message(got[2])) == (404, "No such image: nope-mbref")
    got = call(daemon, "GET", "/images/nope-mbref/get")
    assert got[0] == 404


def test_load_errors_are_in_the_stream(daemon):
    status, _, body = call(daemon, "POST", "/images/load", b"garbage")
    assert status == 200
    text = "Error processing tar file(exit status 1): unexpected EOF"
    assert body == ('{"errorDetail":{"message":"' + text + '"},"error":"' + text + '"}\r\n').encode()
    status, _, body = call(daemon, "POST", "/images/load", tar_of({"x": b"y"}))
    assert status == 200 and json.loads(body)["errorDetail"]["message"].endswith(
        "repositories: no such file or directory"
    )


def test_image_count_in_info(daemon, image):
    info = json.loads(call(daemon, "GET", "/info")[2])
    assert info["Images"] >= 1 and info["Driver"]


def test_the_driver_shown_is_the_snapshotters(daemon, image):
    # dockerd names its graph driver in /info and in inspect; ours follows the snapshotter it picked.
    snapshotter = daemon.daemon.build_backend.components.snapshotter
    expected = {"overlay": "overlay2", "naive": "vfs"}[snapshotter.name]
    assert json.loads(call(daemon, "GET", "/info")[2])["Driver"] == expected
    assert json.loads(call(daemon, "GET", f"/images/{image}/json")[2])["GraphDriver"]["Name"] == expected


def test_a_storage_driver_given_is_the_one_shown(tmp_path):
    with embedded_daemon(tmp_path / "root", storage_driver="overlay2-or-not") as d:
        assert json.loads(call(d, "GET", "/info")[2])["Driver"] == "overlay2-or-not"
