#!/bin/sh
# WardSync launcher, installed as /usr/bin/wardsync by the wardsync package.
# The application is a self-contained folder in /opt/wardsync; nothing else is on PATH.
exec /opt/wardsync/wardsync "$@"
