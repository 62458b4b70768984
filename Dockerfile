# meshrelay's image: the four binaries, built static, on a distroless nonroot base.
# Pick the binary with the container's command, for example
#   command: ["/relay-server"]
# The build stage runs hack/build-binaries.sh, the same script `make build` and
# `make docker-build-check` run, so the command is checked where no container
# engine exists.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=
RUN hack/build-binaries.sh /out "$VERSION" "$COMMIT"

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/relay-server /out/relay-agent /out/relay-webhook /out/relayctl /
USER 65532:65532
ENTRYPOINT ["/relayctl"]
