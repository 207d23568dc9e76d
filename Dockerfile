# Image for the compose services (the pipeline stages); Kafka runs from apache/kafka.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ingest ingest
COPY generators generators
COPY analysis analysis
COPY act act
COPY cli cli
COPY fleetlog fleetlog
RUN pip install --no-cache-dir .
VOLUME /data
ENTRYPOINT []
CMD ["fleetlog", "--help"]
