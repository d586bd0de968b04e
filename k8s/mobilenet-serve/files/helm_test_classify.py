# `helm test`: classify one image through the release's Service and check the answer's shape.
import io
import json
import os
import urllib.request

from PIL import Image

# A drawn picture, not a photo: the test checks that the service answers, not what it sees.
image = Image.new("RGB", (224, 224), (40, 90, 160))
image.paste((230, 200, 40), (60, 60, 164, 164))
body = io.BytesIO()
image.save(body, "JPEG")
headers = {"Content-Type": "image/jpeg"}
if os.environ.get("MOBILENET_API_KEY"):
    headers["X-API-Key"] = os.environ["MOBILENET_API_KEY"]
request = urllib.request.Request(os.environ["TARGET"] + "/classify?top_k=3", body.getvalue(), headers)
with urllib.request.urlopen(request, timeout=30) as response:
    answer = json.load(response)
predictions = answer["results"][0]["predictions"]
assert len(predictions) == 3 and all(0.0 <= p["score"] <= 1.0 for p in predictions), answer
print(f"classified by {answer['model']} at {answer['resolution']}: {predictions[0]['label']}")
