#!/bin/sh
# Build stage only: remove from the virtual environment what serving never uses, after `pip check`
# has seen the complete closure. Usage: sh slim_venv.sh /opt/venv
# What each step saves is measured in docs/deployment.md ("What is in the image").
set -eu
venv="$1"
site="$(echo "$venv"/lib/python3*/site-packages)"

# libclang: Python bindings to clang that TensorFlow's wheel depends on for its own code
# generation tools, never imported when a model runs. wheel: only for building packages.
"$venv/bin/pip" uninstall --yes --quiet libclang wheel
# TensorFlow's C++ headers, for compiling custom ops against it.
rm -rf "$site/tensorflow/include"
# Symbol tables and debug sections of TensorFlow's native libraries; the dynamic symbols that
# Python and the libraries link against stay (as in every Debian package).
find "$site/tensorflow" -type f -name '*.so*' -exec strip --strip-unneeded {} +
# Packages' own test suites (numpy, h5py...): never imported by the package itself.
find "$site" -depth -type d -name tests -exec rm -rf {} +
# TensorFlow still imports and computes after all of the above (the smoke test then runs the model).
"$venv/bin/python" -c 'import tensorflow as tf; tf.constant(1.0) + 1.0'
# pip itself last: the image installs nothing at run time.
"$venv/bin/python" -m pip uninstall --yes --quiet pip
