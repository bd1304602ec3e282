"""Celery worker: tasks, zoo adapters and feature extraction.

Importing this package (or `worker.celery_app`, `worker.tasks`) never imports torch: the worker's
parent process must not initialise CUDA before it forks its pool process, and the API imports
`worker.celery_app` only to publish tasks.
"""
