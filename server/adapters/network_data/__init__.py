"""Published IP network lists (cloud, mail security, privacy and image proxies) loaded for bot classification."""

from server.adapters.network_data.loader import (
    DATA_DIR,
    NetworkDataError,
    load_network_directory,
    oldest_source_age_days,
)

__all__ = ["DATA_DIR", "NetworkDataError", "load_network_directory", "oldest_source_age_days"]
