"""The data factory: any async function becomes a concurrent, resumable job."""

from starfish.data_factory.deferred import Deferred, Dispatcher
from starfish.data_factory.factory import DataFactory, data_factory, resume_from_checkpoint

__all__ = ["DataFactory", "Deferred", "Dispatcher", "data_factory", "resume_from_checkpoint"]
