# SPDX-License-Identifier: Apache-2.0
"""The objectives evaluation's parts (issue 17): bed, patterns, oracle,
analysis, report; e2e/objectives_eval.py is the command."""
