"""One ``APIRouter`` per resource, joined by ``worker.api.app.create_app``."""
