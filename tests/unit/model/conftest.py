import copy

import pytest
import yaml

VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - name: canary
    match:
    - uri: {prefix: /api/}
      headers:
        x-user: {exact: jason}
      queryParams:
        debug: {regex: "^(1|true)$"}
      withoutHeaders:
        x-skip: {}
      method: {exact: GET}
      sourceLabels: {app: productpage}
      port: 9080
    route:
    - destination: {host: reviews, subset: v1, port: {number: 9080}}
      weight: 75
      headers:
        request: {set: {x-canary: "no"}}
    - destination: {host: reviews, subset: v2}
      weight: 25
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,connect-failure,503"}
    fault:
      delay: {percentage: {value: 10}, fixedDelay: 5s}
      abort: {percentage: {value: 0.5}, httpStatus: 503}
    mirror: {host: reviews-shadow}
    mirrorPercentage: {value: 20}
    rewrite: {uri: /v2/api/, authority: reviews.internal}
    headers:
      response: {add: {x-mesh: plait}, remove: [server]}
    corsPolicy:
      allowOrigins: [{exact: "https://example.com"}]
      allowMethods: [GET]
      maxAge: 24h
  - name: moved
    match: [{uri: {exact: /old}}]
    redirect: {uri: /new, redirectCode: 302}
  - name: teapot
    match: [{uri: {exact: /tea}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - route:
    - destination: {host: reviews, subset: v1}
"""

DR = """
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: user, ttl: 0s}}
      localityLbSetting:
        failover: [{from: us-east, to: us-west}]
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms}
      http: {http1MaxPendingRequests: 10, maxRequestsPerConnection: 1, maxRetries: 3, idleTimeout: 1m}
    outlierDetection:
      consecutive5xxErrors: 5
      consecutiveGatewayErrors: 3
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
      minHealthPercent: 10
    tls: {mode: ISTIO_MUTUAL}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN}
"""

SE = """
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: legacy-db}
spec:
  hosts: [db.legacy.internal]
  addresses: [10.20.0.0/16]
  ports:
  - {number: 5432, protocol: TCP, name: postgres}
  - {number: 20880, protocol: dubbo, name: dubbo, targetPort: 20881}
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - {address: 10.20.0.5, ports: {postgres: 6432}, labels: {zone: a}, locality: r1/a, weight: 2}
  - {address: 10.20.0.6}
"""


@pytest.fixture
def vs():
    return copy.deepcopy(yaml.safe_load(VS))


@pytest.fixture
def dr():
    return copy.deepcopy(yaml.safe_load(DR))


@pytest.fixture
def se():
    return copy.deepcopy(yaml.safe_load(SE))


@pytest.fixture
def texts():
    """The three example documents as YAML text: VS, DR, SE."""
    return VS, DR, SE
