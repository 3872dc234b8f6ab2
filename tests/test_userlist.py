import pytest

from cablab_cluster.userlist import UserlistError, parse_userlist


def test_names_and_admins_with_blank_lines_and_comments():
    ul = parse_userlist("# staff\nAlice admin\n\n  bob   # a student\n\ncarol-x\n")
    assert ul.allowed == ("alice", "bob", "carol-x")
    assert ul.admins == ("alice",)


def test_blank_file_is_empty_not_a_crash():
    # The seed's parser raised IndexError on a blank line (hub restart loop).
    assert parse_userlist("\n\n").users == ()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("alice root\n", "userlist line 1: 'alice root' is not `name` or `name admin`"),
        ("alice\nbob admin extra\n", "userlist line 2: 'bob admin extra' is not `name` or `name admin`"),
        ("-bad\n", "userlist line 1: '-bad' is not a GitHub login"),
        ("a--b\n", "userlist line 1: 'a--b' is not a GitHub login"),
        ("alice\nALICE admin\n", "userlist line 2: 'alice' is listed twice"),
    ],
)
def test_errors_name_the_line(text, expected):
    with pytest.raises(UserlistError) as exc:
        parse_userlist(text)
    assert exc.value.errors[0].startswith(expected)


def test_all_errors_are_reported():
    with pytest.raises(UserlistError) as exc:
        parse_userlist("x y z\n\nok\n-no\n")
    assert [e.split(":")[0] for e in exc.value.errors] == ["userlist line 1", "userlist line 4"]


def test_render_round_trips():
    ul = parse_userlist("bob\nalice admin\n")
    assert parse_userlist(ul.render()) == ul


def test_a_bad_line_is_echoed_as_a_short_escaped_excerpt():
    secret = "root:$6$Zq9Vt0pW$3mX2kN8rP1sT4uV7wY0aB3cD6eF9gH2iJ5kL8mN1oP4qR7sT0uV3wX6yZ9:19000"
    with pytest.raises(UserlistError) as exc:
        parse_userlist(f"alice\n{secret}\nbob\x1b[2J admin\n")
    first, second = exc.value.errors
    assert first == "userlist line 2: 'root:$6$Zq9Vt0pW$3mX2kN8…' is not a GitHub login (letters, digits, single '-')"
    assert second.startswith("userlist line 3: 'bob\\x1b[2J' is not a GitHub login")


def test_at_most_five_problems_then_a_count():
    with pytest.raises(UserlistError) as exc:
        parse_userlist("".join(f"-bad{i}\n" for i in range(40)))
    assert len(exc.value.errors) == 6
    assert exc.value.errors[-1] == "userlist: … and 35 more"


def test_the_first_user_is_the_first_who_is_not_an_admin():
    assert parse_userlist("alice admin\nbob\ncarol\n").first_user == "bob"
    assert parse_userlist("alice admin\nzed admin\n").first_user == "alice"  # only admins: the first
