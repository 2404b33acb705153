# syntax=docker/dockerfile:1.7
# One image with every SPIKE binary in /usr/local/bin (spike, spike-nexus, spike-keeper,
# spike-gateway, spike-operator, spike-agent); the Helm chart and the operator start each
# component from it with an explicit command. Build: docker build -t ghcr.io/spike-rs/spike:0.1.0 .

# The builder: Debian bookworm, the same glibc as the distroless Debian 12 final stage.
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# --locked: exactly the dependencies of Cargo.lock. The cache mounts keep downloads and build
# output between builds without putting them in a layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      -p spike -p spike-nexus -p spike-keeper -p spike-gateway -p spike-operator -p spike-agent \
 && mkdir -p /out \
 && for bin in spike spike-nexus spike-keeper spike-gateway spike-operator spike-agent; do \
      cp "target/release/${bin}" /out/; \
    done

# The final stage: no shell, no package manager, glibc and libgcc only; `nonroot` is uid/gid
# 65532, which the chart's pods also require (runAsNonRoot, runAsUser 65532).
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="spike" \
      org.opencontainers.image.description="SPIKE, a SPIFFE-native secrets manager: every binary" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder --chown=0:0 --chmod=0555 /out/ /usr/local/bin/
USER 65532:65532
# Each pod names its binary; with none, the image prints the CLI's help.
CMD ["/usr/local/bin/spike", "--help"]
