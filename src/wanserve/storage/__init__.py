"""Where job files live: outputs (MP4 + JPEG thumbnail) and uploaded inputs. `LocalStorage` keeps them in local
directories; an S3-compatible store can implement the same methods later."""

from wanserve.storage.local import LocalStorage

__all__ = ["LocalStorage"]
