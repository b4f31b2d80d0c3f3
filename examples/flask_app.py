"""The smallest Flask app with lembro sessions: a counter. Run: python examples/flask_app.py"""

from flask import Flask, session

from lembro.flask import Lembro

app = Flask(__name__)
app.secret_key = "change me: a long random string"  # signs the session id cookie
app.config["LEMBRO_MAX_SIZE"] = "4M"  # sessions held in this process, at most 4 MiB
Lembro(app)


@app.get("/")
def count() -> str:
    session["visits"] = session.get("visits", 0) + 1
    return f"visit {session['visits']}\n"


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=5000)
