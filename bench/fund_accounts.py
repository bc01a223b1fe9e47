"""Opens and funds accounts acct:0 … acct:(N-1) through the batch endpoint,
1,000 per request, for the wrk scripts. Usage: fund_accounts.py PORT N"""
import json
import sys
import urllib.request

port, accounts = int(sys.argv[1]), int(sys.argv[2])


def post(path, body):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    return json.load(urllib.request.urlopen(request))


for start in range(0, accounts, 1000):
    items = [
        {
            "id": f"setup-{n}",
            "ops": [
                {"type": "open", "account": f"acct:{n}", "unit": "USD/2"},
                {"type": "transfer", "from": "@world", "to": f"acct:{n}", "amount": 10**15},
            ],
        }
        for n in range(start, min(start + 1000, accounts))
    ]
    results = post("/v1/transactions/batch", {"transactions": items})["results"]
    assert all(r["status"] == "committed" for r in results), results[:3]
