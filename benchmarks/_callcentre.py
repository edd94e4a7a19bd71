"""Turkish call-centre dialogues that end in a tool call, generated deterministically (for benchmarks and tests).

Each conversation: a system prompt naming the tools, a customer's request in Turkish carrying a value (a mobile
number said in groups, "0532 123 45 67", an order number, a city), and the assistant's reply ending in the call with
that value in its own form (`<tool_code>get_bill({"phone": "05321234567"})</tool_code>`). `held_out=True` gives
conversations with numbers no training row has and requests worded differently — what a model meets after training.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SYSTEM = ("Sen Nimbus Telekom'un çağrı merkezi asistanısın. Araçlar: get_bill(phone), close_line(phone), "
          "change_tariff(phone, tariff), check_outage(city), track_order(order_id). Gerekirse tek bir araç çağır.")
CITIES = ["İzmir", "Ankara", "İstanbul", "Muğla", "Eskişehir", "Diyarbakır", "Çanakkale", "Şanlıurfa"]
TARIFFS = ["fiber_100", "fiber_500", "mobil_20gb", "mobil_sinirsiz"]

_REQUESTS = {  # (training wordings, held-out wordings) per tool
    "get_bill": (["Faturamı öğrenmek istiyorum, numaram {phone_spoken}.", "{phone_spoken} numaralı hattın bu ayki "
                  "faturası ne kadar?", "Son faturamı söyler misiniz? Hattım {phone_spoken}."],
                 ["Bu ay ne kadar ödeyeceğim acaba? Numara {phone_spoken}.", "{phone_spoken} için borcumu "
                  "öğrenebilir miyim?"]),
    "close_line": (["{phone_spoken} numaralı hattımı kapatmak istiyorum.", "Hattımı iptal edin lütfen: "
                    "{phone_spoken}."],
                   ["{phone_spoken} hattımı kapatmanızı istiyorum.", "Artık {phone_spoken} numarasını kullanmayacağım, "
                    "kapatın."]),
    "change_tariff": (["{phone_spoken} hattımın tarifesini {tariff} yapın.", "Tarifemi {tariff} olarak değiştirmek "
                       "istiyorum, numaram {phone_spoken}."],
                      ["{phone_spoken} numarasını {tariff} paketine geçirir misiniz?"]),
    "check_outage": (["{city} bölgesinde arıza var mı?", "{city_in} internet çalışmıyor, bir kesinti mi var?"],
                     ["{city} tarafında bir sorun mu var, bağlanamıyorum."]),
    "track_order": (["{order_id} numaralı siparişim nerede?", "Siparişimin durumunu öğrenmek istiyorum: {order_id}."],
                    ["{order_id} kodlu modem ne zaman gelir?"]),
}
_REPLIES = {
    "get_bill": "Faturanızı hemen kontrol ediyorum.", "close_line": "Hat kapatma talebinizi açıyorum.",
    "change_tariff": "Tarife değişikliğinizi yapıyorum.", "check_outage": "Bölgedeki arızaları kontrol ediyorum.",
    "track_order": "Siparişinizi sorguluyorum.",
}


def _phone(rng: random.Random) -> str:
    return "05" + str(rng.choice([30, 31, 32, 33, 34, 35, 36, 41, 42, 43, 44, 45, 46, 52, 53, 54, 55])) + \
        "".join(str(rng.randrange(10)) for _ in range(7))


def _locative(city: str) -> str:
    """"İzmir'de", "Ankara'da", "Muğla'da", "Eskişehir'de": the suffix follows the last vowel (and hardens after
    a voiceless consonant), as a Turkish speaker writes it."""
    vowel = next(c for c in reversed(city.lower()) if c in "aeıioöuü")
    return f"{city}'{'t' if city[-1] in 'çfhkpsşt' else 'd'}{'e' if vowel in 'eiöü' else 'a'}"


def _spoken(phone: str) -> str:
    return f"{phone[:4]} {phone[4:7]} {phone[7:9]} {phone[9:]}"


def conversation(rng: random.Random, *, held_out: bool) -> dict:
    tool = rng.choice(sorted(_REQUESTS))
    phone, city, tariff = _phone(rng), rng.choice(CITIES), rng.choice(TARIFFS)
    order_id = "SP" + "".join(str(rng.randrange(10)) for _ in range(8))
    wording = rng.choice(_REQUESTS[tool][1 if held_out else 0])
    request = wording.format(phone_spoken=_spoken(phone), city=city, city_in=_locative(city), tariff=tariff,
                             order_id=order_id)
    arguments = {"get_bill": {"phone": phone}, "close_line": {"phone": phone},
                 "change_tariff": {"phone": phone, "tariff": tariff}, "check_outage": {"city": city},
                 "track_order": {"order_id": order_id}}[tool]
    call = f"<tool_code>{tool}({json.dumps(arguments, ensure_ascii=False)})</tool_code>"
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": request},
                         {"role": "assistant", "content": f"{_REPLIES[tool]} {call}"}]}


def write_callcentre(path: Path, rows: int, *, seed: int = 0, held_out: bool = False) -> Path:
    """`rows` dialogues to a JSONL file; a held-out file uses another seed stream and the held-out wordings."""
    rng = random.Random(f"{seed}-{'held-out' if held_out else 'train'}")
    path = Path(path)
    path.write_text("".join(json.dumps(conversation(rng, held_out=held_out), ensure_ascii=False) + "\n"
                            for _ in range(rows)), encoding="utf-8")
    return path


# Paraphrases written by hand, three per tool, none of them a held-out wording: a stand-in for a competent local
# paraphraser (an instruct model), used by benchmarks/grow_toolcalls.py `--paraphrase-by-hand` to measure what the
# paraphrase path adds when the writer is good. They pass through the studio's own loop and filters.
_BY_HAND = {
    "get_bill": ["{phone_spoken} numaralı hattın fatura tutarını öğrenebilir miyim?",
                 "Hattım {phone_spoken}, bu dönemki faturam ne kadar geldi?",
                 "{phone_spoken} için son fatura bilgisini rica ediyorum."],
    "close_line": ["{phone_spoken} numaralı aboneliğimi sonlandırmak istiyorum.",
                   "Hattımı kapattırmak istiyorum, numara {phone_spoken}.",
                   "{phone_spoken} hattını artık kullanmıyorum, iptal eder misiniz?"],
    "change_tariff": ["{phone_spoken} hattımı {tariff} tarifesine geçirmek istiyorum.",
                      "Paketimi {tariff} ile değiştirir misiniz? Hattım {phone_spoken}.",
                      "{phone_spoken} numarasında {tariff} paketine geçiş yapmak istiyorum."],
    "check_outage": ["{city_in} bağlantım kesildi, bölgede arıza mı var?",
                     "{city_in} internetim gidip geliyor, bir sorun mu var?",
                     "{city_in} yaşanan bir kesinti var mı acaba?"],
    "track_order": ["{order_id} numaralı siparişim ne zaman elime ulaşır?",
                    "Kargom hâlâ gelmedi, sipariş numarası {order_id}.",
                    "{order_id} siparişinin teslimat durumunu öğrenebilir miyim?"],
}
_FIELDS = {"phone_spoken": r"05\d\d \d{3} \d\d \d\d", "tariff": r"\w+", "city": r"\w+", "city_in": r"\w+'\w+",
           "order_id": r"SP\d{8}"}


def _fields(request: str) -> tuple[str, dict[str, str]]:
    """The tool and the values of a training request, read back through the training wordings."""
    import re

    for tool, (wordings, _) in _REQUESTS.items():
        for wording in wordings:
            pattern = re.escape(wording)
            for name, value in _FIELDS.items():
                pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{value})")
            found = re.fullmatch(pattern, request)
            if found:
                fields = found.groupdict()
                if "city_in" in fields:
                    fields["city"] = fields["city_in"].split("'")[0]
                elif "city" in fields:
                    fields["city_in"] = _locative(fields["city"])
                return tool, fields
    raise ValueError(f"not a training request: {request!r}")


class HandParaphraser:
    """A paraphrase `Writer` (studio.core.chat.paraphrase) that answers the studio's prompt with the hand-written
    wordings above, filled with the request's own values; the seed picks the wording."""

    def write(self, prompt: str, *, seed: int) -> str:
        request = prompt.rsplit("Message: ", 1)[1].strip()
        tool, fields = _fields(request)
        return _BY_HAND[tool][seed % len(_BY_HAND[tool])].format(**fields)
