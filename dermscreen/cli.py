"""The ``dermscreen`` command. Subcommands live beside the code they drive and are imported only
when called, so ``dermscreen --help`` does not pay for TensorFlow.

    dermscreen screen ./lesions/            # score a folder or archive on the embedded default
    dermscreen audit DATASET --json         # data audit (training)
    dermscreen train --config FILE          # train and export a model bundle
    dermscreen evaluate --data DATASET      # evaluate a bundle
    dermscreen compare A B --data DATASET   # two bundles' AUCs on the same images, paired
    dermscreen fit-gate BUNDLE --out DIR    # fit the dermoscopy and quality gate into a bundle
    dermscreen evaluate-gate FOLDER         # what the gate stops in a folder of images
    dermscreen serve | worker | admin ...   # the service
    dermscreen store init                   # create the image store's directory or bucket
"""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of a click command
COMMANDS = {
    "audit": "dermscreen.training.commands:audit",
    "train": "dermscreen.training.commands:train",
    "calibrate": "dermscreen.training.commands:calibrate",
    "evaluate": "dermscreen.training.commands:evaluate",
    "fit-gate": "dermscreen.training.commands:fit_gate",
    "evaluate-gate": "dermscreen.training.commands:evaluate_gate",
    "compare": "dermscreen.training.commands:compare",
    "screen": "dermscreen.worker.commands:screen",
    "worker": "dermscreen.worker.commands:worker",
    "serve": "dermscreen.web.commands:serve",
    "admin": "dermscreen.web.commands:admin",
    "db": "dermscreen.db.commands:db",
    "store": "dermscreen.store_commands:store",
}


class LazyGroup(click.Group):
    """A click group that imports each subcommand's module on first use."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dermscreen")
def main():
    """Melanoma screening of dermoscopic images."""
