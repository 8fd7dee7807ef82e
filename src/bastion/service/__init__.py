"""HTTP inference service over a verified model bundle (needs fastapi and uvicorn)."""

from bastion.service.app import ServiceSettings, create_app, serve

__all__ = ["ServiceSettings", "create_app", "serve"]
