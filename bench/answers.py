"""Questions a person would ask a fine-tuned support model, with the fact each right answer must carry.

Two products, so that a default is judged on more than the data it was chosen on:

- the sample (``presets/samples/skylark-support*.csv``, a robot vacuum, 301 training rows): ``SKYLARK_PROBES``, eight
  questions asked in words neither its training rows nor its validation file use;
- the Aurora T5 thermostat, written for these measurements and smaller (12 facts, 84 training rows): ``AURORA``,
  from which ``write_aurora`` makes a support CSV, its validation file (one rewording per fact), a preference CSV
  (each training question with the right answer as the better one and a plausible wrong fact as the worse one, and
  reworded validation pairs), and eight probe questions asked in yet other words.

``right(answer, probe)``: does the answer carry the probe's fact (a regular expression, case-insensitive)? That is
what a person checks first, and what ROUGE misses: "150 minutes" and "90 minutes" share every other word.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Probe:
    question: str
    fact: str  # a regular expression the right answer matches


@dataclass(frozen=True)
class Fact:
    answer: str
    wrong: str  # a plausible answer with a wrong fact: the worse answer of a preference pair
    fact: str  # regular expression of the fact
    questions: tuple[str, ...]  # training rows (seven ways to ask)
    validation: str  # asked another way: the validation split
    probe: str = ""  # asked yet another way: judged by reading the answer


SKYLARK_PROBES = (
    Probe("Roughly how many minutes of cleaning do I get from one charge of the S2?", r"150"),
    Probe(
        "My S2's battery is empty. How many hours until it's fully charged again?", r"\b4 hours|four hours"
    ),
    Probe("The screen on my robot says E1. What should I do?", r"wheel"),
    Probe("My router is 5 GHz only. Can the robot join it?", r"2\.4"),
    Probe("How can I put the S2 back to factory settings?", r"10 seconds|ten seconds"),
    Probe("How often do I need a fresh HEPA filter in the S2?", r"3 months|three months"),
    Probe("What is the warranty on the robot itself?", r"2[- ]year|two[- ]year"),
    Probe("What is the price of the plain S2, without the self-emptying dock?", r"\$?349"),
)


AURORA = (
    Fact(
        "The Aurora T5 runs on two AA batteries that last about 12 months. The screen shows a battery icon when "
        "they are low.",
        "The Aurora T5 runs on two AA batteries that last about 3 months. The screen shows a battery icon when "
        "they are low.",
        r"12 months|twelve months|a year",
        (
            "How long do the batteries in the T5 last?",
            "How often do I need to change the T5's batteries?",
            "What battery life does the Aurora T5 have?",
            "When will my thermostat need new batteries?",
            "How many months do the AA batteries last in the T5?",
            "Do the batteries in the Aurora run out quickly?",
            "What kind of batteries does the T5 take, and how long do they last?",
        ),
        "I just put fresh AA cells in my Aurora. When will I have to replace them?",
        "How long will a new pair of batteries keep my T5 going?",
    ),
    Fact(
        "Error E7 means the heating wire (W) is not connected. Turn off the power, push the W wire firmly into "
        "its terminal, and turn the power back on.",
        "Error E7 means the Wi-Fi password is wrong. Open the Aurora app, tap Network, and type the password "
        "again.",
        r"\bW\b|heating wire",
        (
            "What does error E7 mean on the T5?",
            "My thermostat shows E7. What should I do?",
            "How do I fix the E7 error?",
            "E7 on the Aurora screen, what's wrong?",
            "The T5 says E7 and the heating won't start. Help?",
            "What causes an E7 code on my thermostat?",
            "Error code E7 on the T5, how do I clear it?",
        ),
        "An E7 just came up on my Aurora's display. What is it telling me?",
        "Why would my T5 flash the code E7?",
    ),
    Fact(
        "To reset the Aurora T5 to factory settings, press and hold the dial for 15 seconds until the screen "
        "shows 'Reset'. Your schedules and Wi-Fi settings are erased.",
        "To reset the Aurora T5 to factory settings, press and hold the dial for 3 seconds until the screen "
        "shows 'Reset'. Your schedules and Wi-Fi settings are erased.",
        r"15 seconds|fifteen seconds",
        (
            "How do I factory reset the T5?",
            "How can I reset my Aurora thermostat?",
            "What are the steps to reset the T5 to factory settings?",
            "I want to erase all settings on my thermostat. How?",
            "How do I restore the Aurora T5 to how it came from the factory?",
            "Is there a way to wipe my T5 and start over?",
            "How long do I hold the dial to reset the T5?",
        ),
        "I'm selling my Aurora. How do I clear everything off it first?",
        "What do I press to bring the T5 back to its original settings?",
    ),
    Fact(
        "In Eco mode the Aurora T5 keeps your home at 17 °C while you are away, and warms it back up 30 minutes "
        "before you return.",
        "In Eco mode the Aurora T5 keeps your home at 12 °C while you are away, and warms it back up 30 minutes "
        "before you return.",
        r"17",
        (
            "What temperature does Eco mode use?",
            "What does Eco mode do on the T5?",
            "How warm does the T5 keep the house in Eco mode?",
            "What is the Eco mode temperature on the Aurora?",
            "When I'm away, what temperature does the T5 hold?",
            "Explain the Aurora's Eco mode.",
            "What does the thermostat set the heat to in Eco mode?",
        ),
        "While nobody is home, how warm does the Aurora keep things in Eco?",
        "If I switch on Eco, what temperature will my home sit at?",
    ),
    Fact(
        "The Aurora T5 has a 3-year warranty. Register it in the Aurora app to use the warranty.",
        "The Aurora T5 has a 1-year warranty. Register it in the Aurora app to use the warranty.",
        r"3[- ]year|three[- ]year|3 years|three years",
        (
            "How long is the T5's warranty?",
            "What warranty comes with the Aurora T5?",
            "Is the thermostat under warranty, and for how long?",
            "How many years of warranty does the T5 have?",
            "What is the warranty period of the Aurora?",
            "Does the T5 come with a guarantee?",
            "For how long is my Aurora thermostat covered?",
        ),
        "If my Aurora breaks after two years, is it still covered?",
        "How many years is the T5 guaranteed for?",
    ),
    Fact(
        "The Aurora T5 costs $129. The Aurora Link power adapter is sold separately for $25.",
        "The Aurora T5 costs $199. The Aurora Link power adapter is sold separately for $25.",
        r"\$?129",
        (
            "How much does the Aurora T5 cost?",
            "What is the price of the T5?",
            "How much is the thermostat?",
            "What does the Aurora T5 sell for?",
            "How expensive is the T5?",
            "What's the T5's price in dollars?",
            "How much would I pay for an Aurora T5?",
        ),
        "What will one Aurora thermostat set me back?",
        "What's the cost of buying the T5?",
    ),
    Fact(
        "You can call Aurora support at 1-888-555-0142, Monday to Saturday, 9 am to 6 pm Eastern time, or chat "
        "with us in the Aurora app.",
        "You can call Aurora support at 1-888-555-0199, Monday to Saturday, 9 am to 6 pm Eastern time, or chat "
        "with us in the Aurora app.",
        r"0142",
        (
            "What is Aurora's support phone number?",
            "How can I call Aurora support?",
            "What number do I call for help with my T5?",
            "How do I reach Aurora customer service by phone?",
            "When is Aurora phone support open?",
            "Can I talk to someone at Aurora?",
            "What's the hotline for thermostat support?",
        ),
        "I'd like to speak to a person about my thermostat. Who do I ring?",
        "Which number reaches a human at Aurora?",
    ),
    Fact(
        "The Aurora T5 does not need a C wire. If your system has none, plug in the Aurora Link power adapter at "
        "your furnace instead.",
        "The Aurora T5 needs a C wire. If your system has none, an electrician must run one before you install "
        "it.",
        r"not need a C wire|doesn't need a C wire|does not need|Aurora Link",
        (
            "Does the T5 need a C wire?",
            "My house has no C wire. Can I install the Aurora?",
            "Is a common wire required for the T5?",
            "I don't have a C wire. Will the T5 work?",
            "Do I need a C wire for the Aurora thermostat?",
            "Can the T5 run without a C wire?",
            "What if my system has no C wire?",
        ),
        "There's no common wire behind my old thermostat. Is that a problem for the Aurora?",
        "Will the T5 work with only two wires and no C wire?",
    ),
    Fact(
        "The T5's screen turns off after 30 seconds to save power. Touch the dial to wake it.",
        "The T5's screen turns off after 5 minutes to save power. Touch the dial to wake it.",
        r"30 seconds|thirty seconds",
        (
            "Why does the T5 screen go dark?",
            "How long does the Aurora's display stay on?",
            "The T5 screen keeps turning off. Is that normal?",
            "When does the thermostat display switch off?",
            "How do I wake the T5's screen?",
            "Why is my Aurora's screen black?",
            "After how long does the T5 display turn off?",
        ),
        "My Aurora's display goes blank by itself after a little while. Why?",
        "How many seconds before the T5 screen switches itself off?",
    ),
    Fact(
        "The T5 reminds you to change your furnace filter every 90 days. You can change the interval in the app "
        "under Settings, Filter.",
        "The T5 reminds you to change your furnace filter every 30 days. You can change the interval in the app "
        "under Settings, Filter.",
        r"90 days|ninety days|3 months|three months",
        (
            "How often does the T5 remind me to change the filter?",
            "What is the filter reminder interval on the Aurora?",
            "When does the thermostat tell me to replace the furnace filter?",
            "How many days between filter reminders?",
            "Does the T5 remind me about the furnace filter?",
            "How often should I replace my furnace filter according to the T5?",
            "Can the Aurora remind me to change filters, and how often?",
        ),
        "Every how many days will my Aurora nag me about a new furnace filter?",
        "What schedule does the T5 use to remind me of the filter?",
    ),
    Fact(
        "The Aurora T5 lets you set up to 8 schedule periods per day, each with its own temperature, in the app "
        "under Schedule.",
        "The Aurora T5 lets you set up to 4 schedule periods per day, each with its own temperature, in the app "
        "under Schedule.",
        r"\b8\b|eight",
        (
            "How many schedule periods can I set per day on the T5?",
            "How many times a day can the Aurora change temperature on a schedule?",
            "What is the maximum number of daily schedule periods?",
            "Can I program several temperatures a day on the T5?",
            "How detailed can the T5's schedule be?",
            "How many temperature changes per day does the Aurora support?",
            "How do I make a schedule on the T5, and how many periods can it have?",
        ),
        "I want different temperatures through the day. How many slots does the Aurora give me?",
        "What's the limit on daily schedule periods for the T5?",
    ),
    Fact(
        "The Aurora T5 does not work with 240-volt electric baseboard heaters. It works with gas, oil and "
        "electric furnaces, boilers and heat pumps.",
        "The Aurora T5 works with 240-volt electric baseboard heaters. It also works with gas, oil and electric "
        "furnaces, boilers and heat pumps.",
        r"not work with 240|doesn't work with 240|does not work|not compatible",
        (
            "Does the T5 work with baseboard heaters?",
            "Can I use the Aurora with 240-volt heating?",
            "Is the T5 compatible with electric baseboards?",
            "Will the Aurora control my line-voltage baseboard heater?",
            "What heating systems does the T5 not support?",
            "I have 240 V baseboard heat. Will the T5 work?",
            "Is the Aurora T5 OK for high-voltage electric heaters?",
        ),
        "My flat is heated by electric baseboards on 240 volts. Can the Aurora run them?",
        "Can the T5 be wired to a 240 V baseboard heater?",
    ),
)

AURORA_PROBES = tuple(Probe(f.probe, f.fact) for f in AURORA[:8])  # eight, as for the sample


def right(answer: str, probe: Probe) -> bool:
    return re.search(probe.fact, answer, flags=re.IGNORECASE) is not None


def write_aurora(folder: Path) -> dict[str, Path]:
    """The Aurora CSVs in ``folder``: support (84 rows) and its validation file (12), preferences (84 pairs) and
    their validation pairs (12)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {
        "support": folder / "aurora-support.csv",
        "support_validation": folder / "aurora-support-validation.csv",
        "preferences": folder / "aurora-preferences.csv",
        "preferences_validation": folder / "aurora-preferences-validation.csv",
    }

    def write(path: Path, header: list[str], rows: list[list[str]]) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)

    write(out["support"], ["question", "answer"], [[q, f.answer] for f in AURORA for q in f.questions])
    write(out["support_validation"], ["question", "answer"], [[f.validation, f.answer] for f in AURORA])
    write(
        out["preferences"],
        ["prompt", "chosen", "rejected"],
        [[q, f.answer, f.wrong] for f in AURORA for q in f.questions],
    )
    write(
        out["preferences_validation"],
        ["prompt", "chosen", "rejected"],
        [[f.validation, f.answer, f.wrong] for f in AURORA],
    )
    return out
