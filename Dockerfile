FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
# curl for the health checks of docker-compose.yml (GET /readyz).
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/graphq /usr/local/bin/graphq
ENTRYPOINT []
CMD ["graphq", "worker"]
