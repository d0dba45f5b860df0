"""The build backend (moby api/server/backend/build): `Backend.build` between the router and the builders.

    backend = new_backend(data_root)      # what the daemon hands to the build router
    image_id = await backend.build(config)

build.py holds `Backend` and the switch between builders, tag.py the `Tagger`, squash.py `squash`.
"""

from minibuild.backend.build import Backend, new_backend, new_build_components
from minibuild.backend.tag import Tagger, new_tagger

__all__ = ["Backend", "Tagger", "new_backend", "new_build_components", "new_tagger"]
