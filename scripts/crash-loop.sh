#!/usr/bin/env bash
# Long crash test (not part of CI): SIGKILLs `cocom ingest` at random moments many times and
# checks after each kill that the store reopens with every part in agreement: during a
# corpus of small documents, during the parts of a long new document (none of it may stay
# visible), during the replacement of a long document (the old version stays whole), and
# during `cocom store import` of three shards (the store stays as before or as after).
#   scripts/crash-loop.sh [ROUNDS]   (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
[[ -x $BUILD_DIR/bin/test_store ]] || bash scripts/setup.sh
COCOM_CRASH_ROUNDS=${1:-200} "$BUILD_DIR/bin/test_store" \
  --gtest_filter='Store.SigkillDuringIngestionLosesNothing:Store.SigkillDuringALongDocumentLeavesNoPartOfIt:Shards.SigkillDuringImportLeavesTheStoreBeforeOrAfter'
