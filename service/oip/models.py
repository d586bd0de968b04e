"""The model a request names, as V2 HTTP and gRPC both look it up: known, ready, loaded, or the error saying why not."""

from __future__ import annotations

from ..core import Core
from ..errors import ServiceError
from ..registry import LoadedModel, Status
from ..store import Variant
from .metadata import MODEL_VERSION

SERVER_NAME = "mobilenet-serve"
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "model_repository", "parameters"]


def known_variant(core: Core, name: str, version: str | None = None) -> Variant:
    """The variant of a model this server serves or is loading; 404 for any other name or version.

    `version` None or "" (gRPC's unset string) means the only one.
    """
    registry = core.registry
    state = registry.states.get(name)
    if state is None or state.variant is None or state.status is Status.NOT_CONFIGURED:
        raise ServiceError(404, f"unknown model {name!r}; served: {', '.join(registry.loaded_names()) or 'none'}")
    check_version(name, version)
    return state.variant


def check_version(name: str, version: str | None) -> None:
    if version and version != MODEL_VERSION:
        raise ServiceError(404, f"model {name!r} has no version {version!r}; its only version is {MODEL_VERSION!r}")


def loaded(core: Core, name: str, version: str | None = None) -> LoadedModel:
    known_variant(core, name, version)
    # Any task of the variant: resolve() then applies REST's readiness and availability checks.
    return core.resolve(name, None)


def is_ready(core: Core, name: str, version: str | None = None) -> bool:
    """Whether the model can serve now; raises for a name or version this server does not know."""
    known_variant(core, name, version)
    registry = core.registry
    return registry.ready and registry.states[name].status is Status.LOADED


def is_store_name(core: Core, name: str) -> bool:
    """Only names the server knows become metric label values: a client must not mint new series."""
    return name in core.registry.states
