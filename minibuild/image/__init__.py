"""Images: references, configs, the image store and the image service (moby image/, reference/,
daemon/images/, image/tarexport).

    reference.py  Docker's reference grammar (`busybox` = docker.io/library/busybox:latest)
    image.py      image configs in Docker's JSON, byte for byte (the image ID is their sha256)
    store.py      configs by ID with parent links; refstore.py: name:tag -> ID
    service.py    ImageService: what the API and the builders call (create, tag, inspect, remove, ...)
    tarexport.py  `docker save` / `docker load` archives; changes.py: import's Dockerfile changes
    busybox.py    an offline busybox base image from the host's static busybox

Import the modules you need (`from minibuild.image.service import ImageService`): this package
imports nothing itself, so a client that only parses references stays light.
"""
