"""Thin kfp v2 components, each a few lines over one library function, all on one platform image.

The components live in `coldcast.components.data`, `.model` and `.monitoring`, and are not imported here: a task
imports `coldcast.components.summaries` at run time, where kfp runs with `_KFP_RUNTIME=true` and its `dsl` has no
`component` decorator, so importing this package must not declare any component.
"""
