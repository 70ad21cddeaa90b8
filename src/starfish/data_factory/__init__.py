"""The data factory: any async function becomes a concurrent, resumable job."""

from starfish.data_factory.factory import DataFactory, data_factory, resume_from_checkpoint

__all__ = ["DataFactory", "data_factory", "resume_from_checkpoint"]
