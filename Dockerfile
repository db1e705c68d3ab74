# metaml: knowledge base, meta-learner and HTTP service in one image.
#   docker build -t metaml .
#   docker run -p 8000:8000 -v $PWD/metaml-data:/app/metaml-data -v /path/to/shared/data:/data:ro metaml
#   (first time: docker run ... metaml quickstart --from /data --no-serve, then the default command serves)
FROM python:3.11-slim

# The container listens on 0.0.0.0, so every operation needs a key (reads included); create one with
#   docker run ... metaml keys create --name NAME --scope read
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    METAML_KB=/app/metaml-data/kb.duckdb METAML_PUBLIC_DATA=/data METAML_READ_REQUIRES_KEY=true
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY collector ./collector
COPY metaml ./metaml
COPY service ./service
COPY data ./data
RUN pip install -e ".[compiled]" && useradd --create-home metaml && mkdir -p /app/metaml-data && chown metaml /app/metaml-data
USER metaml
VOLUME ["/app/metaml-data"]
ENTRYPOINT ["metaml"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
