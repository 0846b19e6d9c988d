#!/usr/bin/env bash
# Placeholder until the artefact step is written.
set -euo pipefail
ls -la "$1"
