# syntax=docker/dockerfile:1
#
# The wsgate image: the release binary on distroless (glibc, CA certificates,
# no shell, no package manager), run as the non-root user 65532 that the Helm
# chart's securityContext names.
#
#   docker build -t wsgate:0.1.0 .
#   docker run --rm -p 8080:8080 -e WSGATE_JWT_SECRET="$(openssl rand -base64 48)" wsgate:0.1.0
#
# The tag the chart pulls by default is wsgate:<appVersion>; push the image to
# your registry and set image.repository (helm/wsgate/values.yaml).

# Debian 12 (bookworm), the release the runtime image is built from: a binary
# linked on a newer Debian would need a newer glibc than the runtime has.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin wsgate \
    && cp target/release/wsgate /usr/local/bin/wsgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/wsgate /usr/local/bin/wsgate
# Only for the chart's preStop hook on Kubernetes < 1.30, which runs `sleep N`
# in the container (>= 1.30 uses the kubelet's own sleep action). Coreutils'
# sleep from the same Debian release; it needs nothing but libc.
COPY --from=build /bin/sleep /usr/local/bin/sleep
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/wsgate"]
