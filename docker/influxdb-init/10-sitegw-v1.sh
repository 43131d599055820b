#!/bin/bash
# InfluxQL and 1.x /write access to the SiteGW bucket of InfluxDB 2.7.
# The influxdb image runs this once, on the first start with an empty volume, after `influx setup` created the
# org, the bucket and the admin token from DOCKER_INFLUXDB_INIT_* (secrets/influxdb.env); the influx CLI is
# already logged in with that token, and the entrypoint exports DOCKER_INFLUXDB_INIT_BUCKET_ID.
# It creates:
#   - the DBRP mapping database `sitegw` (retention policy `autogen`, the default) -> the bucket, so that
#     /write?db=sitegw and InfluxQL queries on `sitegw` reach the bucket;
#   - v1 user `sitegw`, write-only on the bucket: the gateway (sink type influxdb_v1, create_database: false);
#   - v1 user `grafana`, read-only on the bucket: Grafana's InfluxQL data source.
# Their passwords come from .env through docker-compose.yml (SITEGW_INFLUX_PASSWORD, GRAFANA_INFLUX_PASSWORD).
# The entrypoint stops the container when this script fails, and wipes the half-initialised volume so that the
# next start tries again from scratch.
set -euo pipefail

: "${DOCKER_INFLUXDB_INIT_ORG:?set in secrets/influxdb.env}"
: "${DOCKER_INFLUXDB_INIT_BUCKET_ID:?exported by the influxdb image entrypoint after setup}"
: "${SITEGW_INFLUX_PASSWORD:?set in .env}"
: "${GRAFANA_INFLUX_PASSWORD:?set in .env}"

database="${SITEGW_INFLUX_DATABASE:-sitegw}"
bucket_id="${DOCKER_INFLUXDB_INIT_BUCKET_ID}"
org="${DOCKER_INFLUXDB_INIT_ORG}"

influx v1 dbrp create --org "${org}" --db "${database}" --rp autogen --bucket-id "${bucket_id}" --default

influx v1 auth create --org "${org}" --username sitegw --password "${SITEGW_INFLUX_PASSWORD}" \
    --write-bucket "${bucket_id}" --description "SiteGW gateway: write only"

influx v1 auth create --org "${org}" --username grafana --password "${GRAFANA_INFLUX_PASSWORD}" \
    --read-bucket "${bucket_id}" --description "Grafana: read only"

echo "sitegw-init: database ${database} -> bucket ${bucket_id}; v1 users sitegw (write), grafana (read)"
