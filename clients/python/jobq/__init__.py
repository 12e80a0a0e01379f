from .worker import Worker
