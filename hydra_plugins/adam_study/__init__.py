"""This project's Hydra plugins: where generated configs are found, and the multirun launcher.

Hydra imports every module under the `hydra_plugins` namespace package at start-up, for every
command, so these modules import nothing but Hydra; the work happens in `pipelines/`.
"""
