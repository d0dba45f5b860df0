"""minibuild: the path of `docker build` through dockerd, real and compact.

The daemon speaks Docker's API 1.40 on a Unix socket; both builders (the classic
for-loop and a BuildKit-style DAG solver) share the Dockerfile front end in
`minibuild.dockerfile` and the image store in `minibuild.image`.
"""

__version__ = "0.1.0"
