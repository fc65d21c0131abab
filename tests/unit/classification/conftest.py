"""Classifier fixtures, built once per session like the service builds them at startup."""

from __future__ import annotations

import pytest

from server.domain.classification import BotClassifier, UserAgentMatcher, load_user_agent_matcher
from tests.unit.classification.support import build_directory


@pytest.fixture(scope="session")
def user_agent_matcher() -> UserAgentMatcher:
    return load_user_agent_matcher()


@pytest.fixture(scope="session")
def classifier(user_agent_matcher: UserAgentMatcher) -> BotClassifier:
    return BotClassifier(build_directory(), user_agent_matcher)
