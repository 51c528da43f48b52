#!/bin/bash
# Device call 2: the second part of the GGUF to /tmp/m.
cp .devrun/e2/part_b /tmp/m/part_b && ls -la /tmp/m
