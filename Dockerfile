# The worker image: no TensorFlow, the model ships inside the package.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY catalog ./catalog
COPY training ./training
RUN pip install ".[ops]" && useradd --create-home --uid 10001 fashion
USER fashion
ENV FASHION_DATA_DIR=/home/fashion/data
CMD ["fashion", "worker"]
